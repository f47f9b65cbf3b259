"""`git-scratch vqa MODEL FILE... -q Q [-q Q2 ...]`: every question about each file, which is encoded once."""

from __future__ import annotations

import argparse
import json
import sys

from ..data.processor import sniff_media
from .common import (
    add_generation_args,
    add_model_args,
    check_prompt_length,
    decoding,
    empty_output_note,
    load_pixels,
    question_ids,
    shorten,
)
from .export import add_runtime_arg, load_runtime_pipeline


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="images or videos; each question is asked about each")
    parser.add_argument("--question", "-q", action="append", required=True,
                        help="a question; repeat for more (all share each file's one image encoding)")
    add_generation_args(parser)
    add_runtime_arg(parser)


def run(args: argparse.Namespace) -> int:
    """Answer questions about images or videos: one line per question and file, Q<TAB>answer,
    or FILE<TAB>Q<TAB>answer when there are several files.

    Every file is checked before the model loads, and one that cannot be read stops the command
    with its one-line error, as a single file always has. An empty answer is printed as it is,
    with a note on stderr saying the model generated no words.
    """
    kinds = [sniff_media(path) for path in args.files]
    pipe = load_runtime_pipeline(args, task="vqa")
    original = args.semantics == "original"  # the original's prompt goes with its decoding
    prompts = [question_ids(pipe.tokenizer, question, original=original) for question in args.question]
    for question, prompt in zip(args.question, prompts):
        check_prompt_length(len(prompt), args.max_new_tokens, pipe.model.cfg, question)
    for path, kind in zip(args.files, kinds):
        pixel_values = load_pixels(path, kind, pipe)
        if original:  # the original decodes one unpadded prompt at a time (it runs VQA at batch 1)
            ids = [row for prompt in prompts for row in pipe.model.answer(pixel_values, [prompt], **decoding(args))]
        else:
            ids = pipe.model.answer(pixel_values, prompts, **decoding(args))
        for question, row in zip(args.question, ids):  # one image: one row per question
            answer = pipe.tokenizer.decode_answer(row)
            record = {"file": path, "question": question, "answer": answer}
            fields = [path, question, answer] if len(args.files) > 1 else [question, answer]
            print(json.dumps(record, ensure_ascii=False) if args.json else "\t".join(fields))
            if not answer:
                where = f"{path}: question {shorten(question)!r}"
                print(empty_output_note(where, "answer", row, pipe.tokenizer), file=sys.stderr)
    return 0
