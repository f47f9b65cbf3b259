"""`git-scratch vqa MODEL FILE -q Q [-q Q2 ...]`: questions about one file share its image prefix."""

from __future__ import annotations

import argparse
import json

from ..data.processor import sniff_media
from .common import add_generation_args, add_model_args, check_prompt_length, load_pipeline, load_pixels, question_ids


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("file", metavar="FILE", help="one image or video")
    parser.add_argument("--question", "-q", action="append", required=True,
                        help="a question about FILE; repeat for more (all share one image encoding)")
    add_generation_args(parser)


def run(args: argparse.Namespace) -> int:
    """Answer questions about one image or video: one line per question, Q<TAB>answer."""
    kind = sniff_media(args.file)
    pipe = load_pipeline(args)
    prompts = [question_ids(pipe.tokenizer, question) for question in args.question]
    for question, prompt in zip(args.question, prompts):
        check_prompt_length(len(prompt), args.max_new_tokens, pipe.model.cfg, question)
    pixel_values = load_pixels(args.file, kind, pipe)
    ids = pipe.model.answer(pixel_values, prompts, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    width = max(len(prompt) for prompt in prompts)  # answer() left-pads every prompt to this
    for question, row in zip(args.question, ids):
        answer = pipe.tokenizer.decode_answer(row, width)
        record = {"file": args.file, "question": question, "answer": answer}
        print(json.dumps(record, ensure_ascii=False) if args.json else f"{question}\t{answer}")
    return 0
