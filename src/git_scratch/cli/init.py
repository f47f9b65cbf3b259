"""`git-scratch init --preset NAME DIR`: a random-weight checkpoint, offline, that every command reads.

The weights are GIT's own initialisation (seeded), in the official layout through the same
writer as `convert`. The tokenizer is the one thing the hub would normally provide: BERT's
30,522-token vocabulary is not available offline, so a WordPiece vocabulary of exactly the
preset's vocab_size stands in for it, with BERT's pipeline (lowercase, accents stripped,
punctuation split) and BERT's special ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
for the git-* presets (pad, bos and eos follow the config). Its tokens are single characters,
with ## continuations for letters and digits, so any English text encodes and decodes, one
character per token; the rest of the ids are [unusedN], as BERT's spare rows.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import torch

from ..atomic import atomic_directory
from ..checkpoints.files import write_model_files
from ..config import GitConfig, preset_names
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..model.git import GIT
from .info import count

# BERT's ids for the specials GitConfig does not name; used where the vocabulary reaches them.
UNK_ID, MASK_ID = 100, 103
# BERT's pre-tokenizer splits every punctuation mark into a word of its own: only letters and
# digits continue a word, so only they get a ## piece.
WORD_CHARS = string.ascii_lowercase + string.digits
PIECES = [*WORD_CHARS, *string.punctuation, *(f"##{c}" for c in WORD_CHARS)]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory to write")
    parser.add_argument("--preset", required=True, metavar="NAME_OR_JSON",
                        help=f"a preset ({', '.join(preset_names())}) or a git_scratch config JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> int:
    """Write a random-weight checkpoint of a preset's shape, with a tokenizer, for offline use.

    config.json + model.safetensors (the official layout), vocab.txt, tokenizer.json,
    tokenizer_config.json and preprocessor_config.json: caption, vqa, info, convert, eval and
    train --init read it like a downloaded checkpoint. The captions are noise until it is trained.
    """
    cfg = GitConfig.load(args.preset) if args.preset.endswith(".json") else GitConfig.from_name(args.preset)
    vocab = character_vocabulary(cfg, args.preset)
    writer = atomic_directory(Path(args.dir), force=args.force)  # refuses DIR before the slow part
    torch.manual_seed(args.seed)
    model = GIT.from_config(cfg)
    image_size = cfg.vision.image_size
    with writer as tmp:
        write_model_files(model, tmp)
        (tmp / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
        GitTokenizer.from_pretrained(tmp).save_pretrained(tmp)  # BERT's pipeline over vocab.txt
        ImageProcessor(size=image_size, crop_size=image_size).save_pretrained(tmp)
        names = sorted(p.name for p in tmp.iterdir())
    print(f"{args.dir}: {', '.join(names)} (random weights of {args.preset}, seed {args.seed}, "
          f"{count(model):,} parameters)")
    return 0


def character_vocabulary(cfg: GitConfig, name: str) -> list[str]:
    """vocab.txt's lines, token i on line i: exactly cfg.vocab_size tokens, [PAD], [CLS] and [SEP]
    at the config's pad, bos and eos ids, [UNK] and [MASK] at BERT's ids when free, then PIECES,
    then [unused0], [unused1], ..."""
    named = {cfg.pad_id: "[PAD]", cfg.bos_id: "[CLS]", cfg.eos_id: "[SEP]"}
    if len(named) < 3:
        raise ValueError(f"--preset {name}: pad_id {cfg.pad_id}, bos_id {cfg.bos_id} and eos_id {cfg.eos_id} must "
                         "differ for a tokenizer to tell them apart; give each its own id in the config")
    needed = len(named) + 2 + len(PIECES)
    if cfg.vocab_size < needed:
        raise ValueError(f"--preset {name} has vocab_size {cfg.vocab_size}, fewer than the {needed} tokens of a "
                         f"character vocabulary; use a config with vocab_size >= {needed}")
    tokens: list[str | None] = [None] * cfg.vocab_size
    for i, token in named.items():
        tokens[i] = token
    for i, token in ((UNK_ID, "[UNK]"), (MASK_ID, "[MASK]")):
        tokens[i if i < len(tokens) and tokens[i] is None else tokens.index(None)] = token
    free = [i for i, token in enumerate(tokens) if token is None]
    for n, i in enumerate(free):
        tokens[i] = PIECES[n] if n < len(PIECES) else f"[unused{n - len(PIECES)}]"
    return tokens
