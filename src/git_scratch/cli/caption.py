"""`git-scratch caption MODEL FILE...`: one caption per image or video, in input order."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch
from tqdm import tqdm

from ..data.processor import sniff_media
from .common import (
    add_generation_args,
    add_model_args,
    check_prompt_length,
    decoding,
    empty_output_note,
    load_pixels,
    one_line,
    positive_int,
)
from .export import add_runtime_arg, load_runtime_pipeline

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="images or videos, told apart by content (not extension)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="images per forward pass (default 8); videos go one at a time")
    add_generation_args(parser)
    add_runtime_arg(parser)


def run(args: argparse.Namespace) -> int:
    """Caption images and videos: one line per file, FILE<TAB>caption, in input order.

    A file that cannot be read (missing, not an image or video, corrupt, a video given to an
    image model) is reported on stderr and the others are still captioned; the exit code is
    then 1. An empty caption is printed as it is, with a note on stderr saying the model
    generated no words (e.g. its first token was [SEP]). A video model given an image
    captions it as a single image (4-D pixel_values), as GIT itself allows: no temporal
    embedding is added.
    """
    results: dict[int, str | Exception] = {}  # file index -> caption, or why it has none
    kinds: dict[int, str] = {}
    for i, path in enumerate(args.files):
        try:
            kinds[i] = sniff_media(path)
        except (ValueError, OSError) as e:
            results[i] = e
    pipe = load_runtime_pipeline(args)
    check_prompt_length(1, args.max_new_tokens, pipe.model.cfg)
    printer = InOrder(args.files, args.json)
    units = work_units(kinds, args.batch_size)
    log.info("%d images and %d videos in %d forward passes", sum(k == "image" for k in kinds.values()),
             sum(k == "video" for k in kinds.values()), len(units))
    # disable=None hides the bar when stderr is not a terminal (pipes, logs, tests).
    with tqdm(total=len(kinds), desc="captioning", unit="file", disable=None if len(units) > 1 else True) as bar:
        printer.flush(results)
        for unit in units:
            pixels: dict[int, torch.Tensor] = {}
            for i in unit:
                try:
                    pixels[i] = load_pixels(args.files[i], kinds[i], pipe)
                except (ValueError, OSError) as e:
                    results[i] = e
            if pixels:
                ids = pipe.model.generate(torch.cat(list(pixels.values())), **decoding(args))
                generated = ids[:, 1:]  # generate's default prompt is [CLS] alone, one column for every row
                for i, row in zip(pixels, generated):
                    results[i] = pipe.tokenizer.decode_answer(row)
                    if not results[i]:
                        printer.notes[i] = empty_output_note(args.files[i], "caption", row, pipe.tokenizer)
            bar.update(len(unit))
            printer.flush(results)
    return 1 if any(isinstance(r, Exception) for r in results.values()) else 0


def work_units(kinds: dict[int, str], batch_size: int) -> list[list[int]]:
    """File indices per forward pass: images in input order, `batch_size` at a time; each video
    alone. Sorted by first index, so the in-order printer never holds many lines back."""
    images = [i for i, kind in kinds.items() if kind == "image"]
    units = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
    units += [[i] for i, kind in kinds.items() if kind == "video"]
    return sorted(units)


class InOrder:
    """Prints each file's result as soon as every earlier file has one: captions on stdout,
    errors and `notes` (why a caption is empty) on stderr. tqdm.write keeps a progress bar on
    the terminal intact."""

    def __init__(self, files: list[str], as_json: bool) -> None:
        self.files, self.as_json = files, as_json
        self.notes: dict[int, str] = {}  # file index -> a line for stderr beside its caption
        self.next = 0

    def flush(self, results: dict[int, str | Exception]) -> None:
        while self.next in results:
            path, result = self.files[self.next], results[self.next]
            if isinstance(result, Exception):
                tqdm.write(f"git-scratch: error: {naming(path, result)}", file=sys.stderr)
            elif self.as_json:
                tqdm.write(json.dumps({"file": path, "caption": result}, ensure_ascii=False), file=sys.stdout)
            else:
                tqdm.write(f"{path}\t{result}", file=sys.stdout)
            if self.next in self.notes:
                tqdm.write(self.notes[self.next], file=sys.stderr)
            self.next += 1


def naming(path: str, error: Exception) -> str:
    """The error's message, prefixed with the file unless it already names it."""
    message = one_line(error)
    return message if path in message else f"{path}: {message}"
