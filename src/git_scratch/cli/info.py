"""`git-scratch info MODEL_OR_PRESET`: config summary and parameter counts."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoints.files import read_hf_config
from ..checkpoints.variant import VARIANT_FILE, build_variant, is_variant, read_variant
from ..config import GitConfig, preset_names
from ..model.git import GIT
from .common import resolve_model


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_PRESET",
                        help=f"checkpoint directory, hub id, or preset ({', '.join(preset_names())})")


def run(args: argparse.Namespace) -> int:
    """Print a checkpoint's or preset's configuration and parameter counts."""
    cfg, source, builder = load_config(args.model)
    with torch.device("meta"):  # shapes only: no memory, no weights needed
        model = GIT(cfg) if builder is None else build_variant(builder, cfg, source)
    vision, projection, total = count(model.vision), count(model.image_proj), count(model)
    v = cfg.vision
    frames = f"video of {cfg.n_frames} frames -> {cfg.n_image_tokens} tokens" if cfg.n_frames else "images only"
    print(f"{args.model} ({source})")
    print(f"  decoder     {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads, d_ff {cfg.d_ff} "
          f"({cfg.act}), vocab {cfg.vocab_size}, {cfg.max_positions} text positions")
    print(f"  vision      ViT {v.n_layer} layers, d_model {v.d_model}, {v.n_head} heads, d_ff {v.d_ff} "
          f"({v.act}), {v.patch_size}-px patches at {v.image_size} px")
    print(f"  inputs      {v.n_tokens} tokens per image; {frames}")
    print(f"  tokens      bos {cfg.bos_id}, eos {cfg.eos_id}, pad {cfg.pad_id}; "
          f"LM head tied to word embeddings: {'yes' if cfg.tie_embeddings else 'no'}")
    print("parameters")
    for name, n in (("vision", vision), ("projection", projection), ("decoder", total - vision - projection),
                    ("total", total)):
        print(f"  {name:<11} {n:>13,}  {n / 1e6:8.1f}M")
    return 0


def load_config(name: str) -> tuple[GitConfig, str, str | None]:
    """A preset by name, unless a local path of that name exists; else a checkpoint's config.json,
    or a variant's variant.json and the builder that makes its model (checkpoints/variant.py)."""
    if name in preset_names() and not Path(name).exists():
        return GitConfig.from_name(name), f"preset configs/{name}.json", None
    try:
        directory = resolve_model(name)
    except FileNotFoundError:
        if "/" in name:
            raise
        raise FileNotFoundError(f"{name} is neither a checkpoint directory nor a preset; presets: "
                                f"{', '.join(preset_names())}") from None
    if is_variant(directory):
        variant = read_variant(directory)
        return variant.config, f"{directory / VARIANT_FILE}, built by {variant.builder}", variant.builder
    return read_hf_config(directory / "config.json"), str(directory / "config.json"), None


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a tied weight is listed once
