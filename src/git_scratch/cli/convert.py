"""`git-scratch convert SRC DST`: any official layout -> config.json + model.safetensors."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ..atomic import atomic_directory
from ..checkpoints.files import write_model_files
from ..model.git import GIT
from .common import DTYPES, resolve_model
from .info import count

log = logging.getLogger(__name__)


# Everything besides the weights that makes a checkpoint directory usable; convert copies these.
COMPANION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "preprocessor_config.json", "processor_config.json", "generation_config.json")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="checkpoint directory in any official layout (model.safetensors, sharded, "
                             "pytorch_model.bin), or a hub id")
    parser.add_argument("dst", metavar="DST", help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="dtype of the saved weights (default fp32, the parity reference)")


def run(args: argparse.Namespace) -> int:
    """Rewrite a checkpoint as config.json + model.safetensors, with its tokenizer files.

    The tokenizer, preprocessor and generation files of SRC are copied along. Everything lands
    in DST together or not at all; an existing DST is replaced only with --force.
    """
    src = resolve_model(args.src)
    writer = atomic_directory(Path(args.dst), force=args.force)  # refuses DST before the slow load
    model = GIT.from_pretrained(src, dtype=DTYPES[args.dtype])
    companions = [src / name for name in COMPANION_FILES if (src / name).is_file()]
    if not companions:
        log.warning("%s has no tokenizer or preprocessor files; caption and vqa will need them in %s",
                    src, args.dst)
    with writer as tmp:  # the weights and the copied files appear at DST in one rename
        write_model_files(model, tmp)
        for file in companions:
            shutil.copyfile(file, tmp / file.name)
    names = ["config.json", "model.safetensors", *(file.name for file in companions)]
    print(f"{args.dst}: {', '.join(names)} ({args.dtype}, {count(model):,} parameters)")
    return 0
