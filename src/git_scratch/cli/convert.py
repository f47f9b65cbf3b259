"""`git-scratch convert SRC DST`: any official layout, or an original GenerativeImage2Text model.pt,
-> config.json + model.safetensors."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ..atomic import atomic_directory
from ..checkpoints.files import write_model_files
from ..checkpoints.original import VARIANTS, load_original
from ..config import GitConfig
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
                             "pytorch_model.bin), a hub id, or an original microsoft/GenerativeImage2Text "
                             "model.pt (output/GIT_*/snapshot/model.pt)")
    parser.add_argument("dst", metavar="DST", help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="dtype of the saved weights (default fp32, the parity reference)")
    parser.add_argument("--variant", metavar="NAME",
                        help="which original model a model.pt is, when its folders do not say: "
                             f"{', '.join(VARIANTS)}")
    parser.add_argument("--config", metavar="FILE.json",
                        help="instead of --variant: a git_scratch config JSON, for an original-layout model.pt "
                             "of other sizes")


def run(args: argparse.Namespace) -> int:
    """Rewrite a checkpoint as config.json + model.safetensors, with its tokenizer files.

    The tokenizer, preprocessor and generation files of SRC are copied along. Everything lands
    in DST together or not at all; an existing DST is replaced only with --force.
    """
    original = Path(args.src).suffix == ".pt" and Path(args.src).is_file()
    if (args.variant or args.config) and not original:
        raise ValueError(f"--variant and --config are for an original model.pt, and {args.src} is not one; drop them")
    src = Path(args.src) if original else resolve_model(args.src)
    writer = atomic_directory(Path(args.dst), force=args.force)  # refuses DST before the slow load
    if original:  # the original's files hold weights only: no tokenizer or preprocessor to copy
        config = GitConfig.load(args.config) if args.config else None
        model = load_original(src, args.variant, config=config, dtype=DTYPES[args.dtype])
        src = src.parent
    else:
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
