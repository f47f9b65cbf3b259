"""`git-scratch manifest KIND --annotations FILE --images DIR OUT.jsonl`: a training manifest from a dataset's files.

The dataset is read by evaluation/datasets.py (the same readers `eval` uses), and each example
becomes manifest lines in the format of data/manifest.py, paths relative to OUT's folder:

    captions (coco, karpathy, textcaps)   one line per reference caption: {"image", "caption"}
    questions (vqav2, textvqa)             {"image", "question", "answer", "answers"}: the answer to
                                           train on is the most frequent of the ten (VQAv2's
                                           multiple_choice_answer is defined so), all ten kept for eval
    msrvtt-qa                              {"video", "question", "answer"}

Examples whose image is missing, and those with no reference (a test split), are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from ..atomic import atomic_write_text
from ..evaluation.datasets import DATASETS, KARPATHY_SPLITS, EvalItem, read_dataset


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=DATASETS, help="the dataset whose files are read")
    parser.add_argument("out", metavar="OUT.jsonl", help="the manifest to write")
    parser.add_argument("--annotations", metavar="FILE",
                        help="the dataset's annotation file (captions_train2014.json, dataset_coco.json, "
                             "v2_mscoco_train2014_annotations.json, TextVQA_0.5.1_train.json, ...)")
    parser.add_argument("--questions", metavar="FILE", help="vqav2: the questions file of the same split")
    parser.add_argument("--images", required=True, metavar="DIR", help="the folder of the images (or videos)")
    parser.add_argument("--split", choices=KARPATHY_SPLITS, help="karpathy: the split to write (default train)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT.jsonl")


def run(args: argparse.Namespace) -> int:
    """Write a training manifest (JSONL) from a dataset's own annotation files.

    Prints how many lines were written and which examples were skipped, and why."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it, or choose another OUT.jsonl")
    split = args.split or ("train" if args.kind == "karpathy" else None)
    items, skipped = read_dataset(args.kind, Path(args.annotations) if args.annotations else None, Path(args.images),
                                  questions=Path(args.questions) if args.questions else None, split=split)
    unlabelled = sum(not item.references for item in items)
    if unlabelled:
        skipped["no reference (a test split?)"] = unlabelled
    lines = [json.dumps(record) + "\n" for item in items for record in manifest_records(item, out.parent)]
    if not lines:
        raise ValueError(f"no example of {args.annotations or args.questions} has its image and a reference "
                         f"(skipped: {describe(skipped)}); check --images and the split")
    atomic_write_text(out, "".join(lines))
    print(f"{out}: {len(lines)} lines from {len(items) - unlabelled} examples; skipped: {describe(skipped)}")
    return 0


def manifest_records(item: EvalItem, root: Path) -> list[dict]:
    """The manifest lines of one example (none when it has no reference)."""
    media = {"video" if item.is_video else "image": os.path.relpath(item.media, root)}
    if item.prompt is None:
        return [media | {"caption": caption} for caption in item.references if caption.strip()]
    if not item.references:
        return []
    if len(item.references) == 1:
        return [media | {"question": item.prompt, "answer": item.references[0]}]
    answer = Counter(item.references).most_common(1)[0][0]  # ties: the first given, as Counter keeps order
    return [media | {"question": item.prompt, "answer": answer, "answers": list(item.references)}]


def describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "none"
