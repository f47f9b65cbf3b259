"""`git-scratch parity MODEL | --preset NAME`: stage-by-stage comparison with transformers."""

from __future__ import annotations

import argparse
import contextlib
import json

from ..config import preset_names
from ..tools import parity
from .common import DTYPES, parse_device, positive_int, resolve_model


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?", help="checkpoint directory or hub id (or --preset)")
    parser.add_argument("--preset", choices=preset_names(), metavar="NAME",
                        help="random weights of a preset's shape instead of MODEL, offline (e.g. git-base)")
    parser.add_argument("--image", help="image file (default: a generated image)")
    parser.add_argument("--text", help="text after [CLS], also the generation prompt (default: random ids "
                                       "for the forward pass, [CLS] alone for generation)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="both models in this dtype; the tolerance follows it (docs/parity.md)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights, image and ids")
    parser.add_argument("--num-beams", type=positive_int, default=3, help="beams of the beam-search row (default 3)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=10, help="tokens to generate (default 10)")
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Compare git_scratch with transformers' GitForCausalLM, stage by stage, on one checkpoint.

    The same weights are loaded by both, the same inputs run through both, and a table compares
    every stage from the patch embedding to the generated tokens (docs/parity.md). --preset NAME
    saves random weights of that shape as a checkpoint first, so it runs offline. Exit code 1
    when any stage fails.
    """

    if (args.model is None) == (args.preset is None):
        raise ValueError("git-scratch parity takes MODEL or --preset NAME, not both and not neither; pass one")
    transformers = parity.import_transformers()  # before any work: one line if it is missing
    transformers.utils.logging.disable_progress_bar()
    device = parse_device(args.device)
    if args.preset:
        source = parity.preset_checkpoint(args.preset, args.seed)
    else:
        source = contextlib.nullcontext(resolve_model(args.model))
    with source as directory:
        report = parity.parity_report(directory, dtype=DTYPES[args.dtype], device=device, image=args.image,
                                      text=args.text, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                      num_beams=args.num_beams)
    if args.preset:
        report["model"] = f"--preset {args.preset} (random weights, seed {args.seed})"
    print(json.dumps(report) if args.json else parity.format_report(report))
    return 0 if report["passed"] else 1
