"""`git-scratch train`: fine-tune or train from a preset; every TrainConfig field is a flag."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from ..training import loop
from ..training.loop import TrainConfig
from .common import parse_device


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a training config JSON (e.g. configs/train/shapes-demo.json); "
                                         "flags below override its fields")
    parser.add_argument("--force", action="store_true", help="start over in an --out-dir that holds a run")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=argparse.SUPPRESS, metavar=("B1", "B2"))
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"default: {f.default}")


def run(args: argparse.Namespace) -> int:
    """Fine-tune a checkpoint (--init) or train from a preset (--model, --tokenizer) on a manifest."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: tuple(v) if k == "betas" else v for k, v in vars(args).items() if k in fields}
    cfg = TrainConfig.load(args.config, **overrides) if args.config else TrainConfig(**overrides)
    if not cfg.train_manifest:
        raise ValueError("no training data: pass --train-manifest FILE.jsonl (or set it in --config)")
    parse_device(cfg.device)
    previous = [name for name in ("checkpoints", "model", "metrics.jsonl") if (Path(cfg.out_dir) / name).exists()]
    if previous and not cfg.resume:
        if not args.force:
            raise FileExistsError(f"{cfg.out_dir} already holds a training run ({', '.join(previous)}); pass "
                                  "--resume to continue it, --force to replace it, or choose another --out-dir")
        # The old run's later steps would outrank the new run's checkpoints in keep_last and --resume.
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
    result = loop.train(cfg, progress=sys.stderr.isatty())
    print(f"trained to step {result['steps']}, final loss {result['final_loss']:.4f}; model in {result['model_dir']}")
    return 0
