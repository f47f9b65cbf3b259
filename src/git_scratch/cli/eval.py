"""`git-scratch eval MODEL MANIFEST`: caption and VQA metrics on a manifest, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from ..training.evaluate import evaluate
from .common import add_generation_args, add_model_args, load_pipeline, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("manifest", help="JSONL manifest of captions and/or questions")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    add_generation_args(parser)


def run(args: argparse.Namespace) -> int:
    """Score a model on a manifest: caption exact match, BLEU-4, CIDEr-D; VQAv2 accuracy. Prints JSON."""
    pipe = load_pipeline(args)
    result = evaluate(pipe.model, pipe.tokenizer, pipe.processor, args.manifest, batch_size=args.batch_size,
                      num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, progress=sys.stderr.isatty())
    print(json.dumps(result))
    return 0
