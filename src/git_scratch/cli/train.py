"""`git-scratch train`: fine-tune or train from a preset; every TrainConfig field is a flag.

A flag's help is its field's trailing comment in TrainConfig (training/loop.py), read from the
source with `tokenize`: the comment a reader of the dataclass sees is the one documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import shutil
import sys
import tokenize
from pathlib import Path
from typing import Any

from ..training import loop
from ..training.loop import TrainConfig
from .common import parse_device

# What a previous run left in --out-dir; --force removes the first and last, which the new run
# would otherwise mix with its own (keep_last and --resume, TensorBoard's curves).
RUN_FILES = ("checkpoints", "model", "metrics.jsonl", "tensorboard")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a training config JSON (e.g. configs/train/shapes-demo.json); "
                                         "flags below override its fields")
    parser.add_argument("--force", action="store_true", help="start over in an --out-dir that holds a run")
    parser.add_argument("--allow-changes", action="store_true",
                        help="with --resume: train on with settings that differ from the checkpoint's "
                             "(each is logged); without it such a resume is refused")
    comments = field_comments(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f" (default: {f.default})" if f.default != "" else ""
        # argparse %-formats help: a literal % (e.g. "~30% slower") must be doubled
        text = (comments.get(f.name, "") + default).replace("%", "%%").strip()
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=argparse.SUPPRESS, metavar=("B1", "B2"),
                                help=text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment, from lines `name: type = default  # comment` of the
    class source; {} when the source is not installed (the flags then show only defaults)."""
    try:
        source = inspect.getsource(cls)
    except OSError:
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    lines: dict[int, list[tokenize.TokenInfo]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.NEWLINE):
            lines.setdefault(token.start[0], []).append(token)
    comments = {}
    for first, second, *_, last in (tokens for tokens in lines.values() if len(tokens) >= 3):
        if first.string in names and second.string == ":" and last.type == tokenize.COMMENT:
            comments[first.string] = last.string.lstrip("#").strip()
    return comments


def run(args: argparse.Namespace) -> int:
    """Fine-tune a checkpoint (--init) or train from a preset (--model, --tokenizer) on a manifest."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: tuple(v) if k == "betas" else v for k, v in vars(args).items() if k in fields}
    cfg = TrainConfig.load(args.config, **overrides) if args.config else TrainConfig(**overrides)
    if not cfg.train_manifest:
        raise ValueError("no training data: pass --train-manifest FILE.jsonl (or set it in --config)")
    parse_device(cfg.device)
    if args.allow_changes and not cfg.resume:
        raise ValueError("--allow-changes only applies when resuming; add --resume, or drop --allow-changes")
    previous = [name for name in RUN_FILES if (Path(cfg.out_dir) / name).exists()]
    if previous and not cfg.resume:
        if not args.force:
            raise FileExistsError(f"{cfg.out_dir} already holds a training run ({', '.join(previous)}); pass "
                                  "--resume to continue it, --force to replace it, or choose another --out-dir")
        # The old run's later steps would outrank the new run's checkpoints in keep_last and --resume.
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
        shutil.rmtree(Path(cfg.out_dir) / "tensorboard", ignore_errors=True)
    result = loop.train(cfg, progress=sys.stderr.isatty(), allow_changes=args.allow_changes)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns here; one line is enough
        print(summary_line(result))
    return 0


def summary_line(result: dict[str, Any]) -> str:
    loss = "none (no step left to train)" if result["final_loss"] is None else f"{result['final_loss']:.4f}"
    held_out = "".join(f", {name} {value:.4g}" for name, value in (result.get("eval") or {}).items())
    return f"trained to step {result['steps']}, final loss {loss}{held_out}; model in {result['model_dir']}"
