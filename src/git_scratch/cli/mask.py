"""`git-scratch mask`: GIT's attention mask, or a checkpoint's, drawn as a PNG, PDF or SVG."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.git import GIT
from ..tools.pictures import check_output, draw_mask
from .common import positive_int, resolve_model


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL", help="draw this checkpoint's own mask (model.attention_mask) "
                                                         "for its image tokens and frames: a directory or hub id")
    parser.add_argument("--image-tokens", type=positive_int, help="image tokens per frame (default 4, or MODEL's)")
    parser.add_argument("--text-tokens", type=positive_int, default=4)
    parser.add_argument("--frames", type=positive_int, help="frames (default 1, or MODEL's)")
    parser.add_argument("--left-pad", type=int, default=0, help="how many of the text tokens are padding")
    parser.add_argument("--out", default="mask.png", help="picture to write, .png, .pdf or .svg (default: mask.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    """Draw GIT's attention mask, blocks labelled, as a PNG, PDF or SVG (built by the mask code itself).

    Without --model the mask is model/mask.py's; with it, the checkpoint's `model.attention_mask`
    (the one the forward pass and generation use) for the checkpoint's image tokens and frames.
    Above 32 tokens a side the picture shows the blocks and their sizes instead of every token.
    """
    out = Path(args.out)
    check_output(out, args.force)  # before loading a model
    mask, image_tokens, frames, title = None, 4, 1, "GIT attention mask"
    if args.model is not None:
        model = GIT.from_pretrained(resolve_model(args.model))
        mask, image_tokens, frames = model.attention_mask, model.cfg.vision.n_tokens, model.cfg.n_frames or 1
        title = f"{args.model}: attention mask"
    draw_mask(out, mask, n_image=args.image_tokens or image_tokens, n_text=args.text_tokens,
              frames=args.frames or frames, left_pad=args.left_pad, title=title, force=args.force)
    print(args.out)
    return 0
