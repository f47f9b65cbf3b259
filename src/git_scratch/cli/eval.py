"""`git-scratch eval MODEL MANIFEST`: caption and VQA metrics on a manifest, as a table or JSON.

`git-scratch eval MODEL --dataset KIND --annotations F --images DIR`: a dataset's own files
(evaluation/datasets.py), the official scores (evaluation/metrics.py) and, with --results, the
official result file. Under `torchrun --nproc-per-node N -m git_scratch.cli eval ... --work-dir DIR`
the ranks share the items (evaluation/run.py) and rank 0 prints the scores."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..data.manifest import Example
from ..evaluation.datasets import DATASETS, read_dataset
from ..evaluation.metrics import JAVA_MISSING, TOKENIZERS, caption_scores, vqa_scores
from ..evaluation.results import write_caption_results, write_vqa_results
from ..evaluation.run import predict_items
from ..training.evaluate import predict_manifest, score
from .common import add_generation_args, add_model_args, decoding, load_pipeline, positive_int

# Flags of --dataset alone: given with a manifest they would be ignored, so they are refused.
DATASET_FLAGS = ("annotations", "images", "questions", "split", "results", "work_dir", "shard_size")


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("manifest", nargs="?", help="JSONL manifest of captions and/or questions (or --dataset)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    data = parser.add_argument_group("a dataset's own files, instead of a manifest")
    data.add_argument("--dataset", choices=DATASETS, help="which dataset the files are (docs/evaluation.md)")
    data.add_argument("--annotations", metavar="FILE", help="its annotation file, e.g. captions_val2014.json")
    data.add_argument("--images", metavar="DIR", help="the folder of its images (MSRVTT-QA: videos)")
    data.add_argument("--questions", metavar="FILE", help="vqav2: the questions file paired with --annotations")
    data.add_argument("--split", help="karpathy: train, restval, val or test (default test)")
    data.add_argument("--tokenizer", choices=TOKENIZERS, default="ptb",
                      help="captions: ptb (default, Java: the toolkit's, as published tables) or python (no Java; "
                           "not comparable with published numbers)")
    data.add_argument("--results", metavar="OUT.json", help="also write the official result file: "
                      '[{"image_id", "caption"}] for captions, [{"question_id", "answer"}] for questions')
    data.add_argument("--work-dir", metavar="DIR", help="keep each finished shard of predictions here: a rerun "
                      "resumes; needed under torchrun, where every rank must see it")
    data.add_argument("--shard-size", type=positive_int, metavar="N", help="items per shard of --work-dir "
                      "(default 2 x --batch-size): the unit of resuming and of the ranks' shares")
    data.add_argument("--num-workers", type=int, default=2, help="DataLoader processes decoding images (default 2)")
    add_generation_args(parser)
    parser.add_argument("--predictions", metavar="FILE.jsonl",
                        help="also write one JSON line per example: file, prompt, prediction, references")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --predictions or --results file")


def run(args: argparse.Namespace) -> int:
    """Score a model on a manifest, or on a dataset's own files (--dataset) with the COCO toolkit's metrics.

    A manifest: caption exact match, BLEU-4, CIDEr-D; VQAv2 accuracy. --dataset coco, karpathy,
    vqav2, textvqa, textcaps or msrvtt-qa: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D over the PTB
    tokenizer, VQA accuracy by answer type, --results for the official result file; sharded under
    torchrun and resumable with --work-dir (docs/evaluation.md).
    Prints one metric a line, or one JSON object with --json."""
    if args.dataset is not None or args.manifest is None:
        return run_dataset(args)
    given = [f"--{name.replace('_', '-')}" for name in DATASET_FLAGS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{given[0]} is for a dataset's own files; pass --dataset KIND with it, or drop it")
    out = Path(args.predictions) if args.predictions else None
    if out is not None and out.exists() and not args.force:  # before the evaluation, which can take hours
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it, or choose another --predictions")
    pipe = load_pipeline(args)
    examples, predictions, references = predict_manifest(
        pipe.model, pipe.tokenizer, pipe.processor, args.manifest, batch_size=args.batch_size,
        progress=sys.stderr.isatty(), **decoding(args))
    result = score(examples, predictions, references)
    if out is not None:
        atomic_write_text(out, prediction_lines(examples, predictions, references))
    print(json.dumps(result) if args.json else metrics_table(result))
    return 0


def metrics_table(metrics: dict[str, Any]) -> str:
    """One metric a line, names aligned, rates to 4 decimals."""
    width = max(len(name) for name in metrics)
    return "\n".join(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}"
                     for name, value in metrics.items())


def prediction_lines(examples: Sequence[Example], predictions: Sequence[str | None],
                     references: Sequence[Sequence[str]]) -> str:
    """JSON lines in manifest order; prediction null where the file could not be read."""
    return "".join(json.dumps({"file": str(ex.media), "prompt": ex.prompt, "prediction": prediction,
                               "references": list(refs)}) + "\n"
                   for ex, prediction, refs in zip(examples, predictions, references))


def run_dataset(args: argparse.Namespace) -> int:
    """--dataset: read the files, predict (sharded under torchrun), score on rank 0, write --results."""
    if args.dataset is None:
        raise ValueError("no manifest and no --dataset; pass a MANIFEST, "
                         "or --dataset KIND --annotations FILE --images DIR")
    if args.manifest is not None:
        raise ValueError(f"both the manifest {args.manifest} and --dataset {args.dataset} were given; "
                         "pass one of them")
    if args.images is None:
        raise ValueError(f"--dataset {args.dataset} has no media folder; "
                         "pass --images DIR, the folder of its images or videos")
    if args.predictions is not None:
        raise ValueError("--predictions lists a manifest's examples; with --dataset use --results OUT.json")
    results = Path(args.results) if args.results else None
    if results is not None and results.exists() and not args.force:  # before the evaluation, which can take hours
        raise FileExistsError(f"{results} already exists; pass --force to overwrite it, or choose another --results")
    items, skipped = read_dataset(args.dataset, _path(args.annotations), Path(args.images),
                                  questions=_path(args.questions), split=args.split)
    captions = all(item.prompt is None for item in items)
    scored = all(item.references for item in items)  # a test split has none: results file only
    if captions and scored and args.tokenizer == "ptb" and shutil.which("java") is None:
        raise ValueError(JAVA_MISSING)  # now, not after the predictions
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device == "cuda":  # torchrun: one GPU per process
        args.device = f"cuda:{local_rank}"
    pipe = load_pipeline(args, task="caption" if captions else "vqa")
    predictions = predict_items(pipe.model, items, pipe.processor, pipe.tokenizer, batch_size=args.batch_size,
                                work_dir=_path(args.work_dir), shard_size=args.shard_size,
                                num_workers=args.num_workers, progress=sys.stderr.isatty(), **decoding(args))
    if int(os.environ.get("RANK", "0")) != 0:  # every rank has the predictions; one scores and writes
        return 0
    unreadable = len(items) - len(predictions)
    result: dict[str, Any] = {"dataset": args.dataset, "n_items": len(items), "n_predicted": len(predictions),
                              "skipped": skipped | ({"media unreadable": unreadable} if unreadable else {})}
    if scored:
        result |= (caption_scores(predictions, {item.key: item.references for item in items},
                                  tokenizer=args.tokenizer) if captions else vqa_scores(predictions, items))
    if results is not None:
        write = write_caption_results if captions else write_vqa_results
        write(results, predictions, force=args.force)
    print(json.dumps(result) if args.json else metrics_table(flat(result)))
    return 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested results (accuracy_by_type, skipped) as dotted names, one a line in the table."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = value
    return out
