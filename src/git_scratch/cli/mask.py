"""`git-scratch mask`: GIT's attention mask drawn as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..tools.pictures import draw_mask
from .common import positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-tokens", type=positive_int, default=4, help="image tokens per frame")
    parser.add_argument("--text-tokens", type=positive_int, default=4)
    parser.add_argument("--frames", type=positive_int, default=1)
    parser.add_argument("--left-pad", type=int, default=0, help="how many of the text tokens are padding")
    parser.add_argument("--out", default="mask.png", help="PNG to write (default: mask.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    """Draw GIT's attention mask, blocks labelled, as a PNG (built by model/mask.py itself)."""
    draw_mask(Path(args.out), n_image=args.image_tokens, n_text=args.text_tokens, frames=args.frames,
              left_pad=args.left_pad, force=args.force)
    print(args.out)
    return 0
