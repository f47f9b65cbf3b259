"""`git-scratch eval MODEL MANIFEST`: caption and VQA metrics on a manifest, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..data.manifest import Example
from ..training.evaluate import predict_manifest, score
from .common import add_generation_args, add_model_args, load_pipeline, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("manifest", help="JSONL manifest of captions and/or questions")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    add_generation_args(parser)
    parser.add_argument("--predictions", metavar="FILE.jsonl",
                        help="also write one JSON line per example: file, prompt, prediction, references")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --predictions file")


def run(args: argparse.Namespace) -> int:
    """Score a model on a manifest: caption exact match, BLEU-4, CIDEr-D; VQAv2 accuracy.

    Prints one metric a line, or one JSON object with --json."""
    out = Path(args.predictions) if args.predictions else None
    if out is not None and out.exists() and not args.force:  # before the evaluation, which can take hours
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it, or choose another --predictions")
    pipe = load_pipeline(args)
    examples, predictions, references = predict_manifest(
        pipe.model, pipe.tokenizer, pipe.processor, args.manifest, batch_size=args.batch_size,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, progress=sys.stderr.isatty())
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
