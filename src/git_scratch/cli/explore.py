"""`git-scratch explore MODEL`: a local web page to look inside one checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..explore import Explorer, serve
from .common import add_model_args, load_pipeline, positive_int, resolve_model


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--port", type=int, default=8000,
                        help="port on 127.0.0.1 (default 8000; 0 picks a free one)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=100,
                        help="largest image or video the page accepts, in MiB (default 100)")


def run(args: argparse.Namespace) -> int:
    """Serve a local web page (127.0.0.1 only) to explore MODEL: captions, answers, attention per layer and head.

    Open the URL it prints. Drop an image or a short video (a video checkpoint) on the page: it
    shows the greedy caption and every beam with its score, answers questions, and for each
    generated token where it looks on the image grid, per decoder layer and head, averaged over
    heads or rolled out across layers; the attention mask of the sequence; and, for a checkpoint
    transformers can load, the stage-by-stage parity table. One model call runs at a time.
    Ctrl-C stops it and deletes the uploads. docs/explore.md describes the page and its JSON API.
    """
    if not 0 <= args.port <= 65535:  # before loading the model
        raise ValueError(f"--port {args.port} is not a port; pass 0 to 65535 (0: any free one)")
    explorer = load_explorer(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                             max_upload_mb=args.max_upload_mb)
    try:
        serve(explorer, args.port)
    except KeyboardInterrupt:  # the way to stop a server: not an error
        print("git-scratch explore: stopped", file=sys.stderr)
    finally:
        explorer.close()
    return 0


def load_explorer(model: str, *, device: str = "cpu", dtype: str = "fp32", backend: str | None = None,
                  max_upload_mb: int = 100) -> Explorer:
    """An Explorer over MODEL, loaded as every command loads it (load_pipeline's checks and errors)."""
    pipe = load_pipeline(argparse.Namespace(model=model, device=device, dtype=dtype, backend=backend))
    return Explorer(pipe.model, pipe.tokenizer, pipe.processor, name=model, directory=resolve_model(model),
                    max_upload_bytes=max_upload_mb * 2**20)
