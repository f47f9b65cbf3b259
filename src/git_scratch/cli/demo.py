"""`git-scratch demo`: the README's main job (git_scratch.demo)."""

from __future__ import annotations

import argparse
import json
import sys

from ..demo.recipe import report, run_demo
from .common import parse_device, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--steps", type=positive_int, help="training steps (default: configs/train/shapes-demo.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="replace --out even if the demo did not make it")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                        help="training precision (default: bf16 on a CPU with AVX512_BF16 or AMX, else TrainConfig's "
                             "auto: bf16 on CUDA, fp32 on CPU); fp32 forces the fp32 path")


def run(args: argparse.Namespace) -> int:
    """Train a small GIT from scratch on synthetic shapes, then caption held-out images."""
    parse_device(args.device)
    result = run_demo(args.out, steps=args.steps, seed=args.seed, device=args.device, force=args.force,
                      progress=sys.stderr.isatty(), precision=args.precision)
    print(report(result))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "train_config"}))
    return 0
