"""Tokenizer files to a `tokenizers.Tokenizer` and its settings, as transformers reads them.

tokenizer.json is loaded as it is; a directory with only vocab.txt gets the pipeline that
transformers' BertTokenizer builds from it (transformers/models/bert/tokenization_bert.py), with
tokenizer_config.json's flags and BERT's defaults for those it omits. tokenizer.py wraps the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors


def is_bert(backend: Tokenizer) -> bool:
    return (isinstance(backend.model, models.WordPiece)
            and isinstance(backend.normalizer, normalizers.BertNormalizer)
            and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer))


def bert_wordpiece(vocab_path: Path, config: dict[str, Any], specials: dict[str, str]) -> Tokenizer:
    """The pipeline of transformers' BertTokenizer, with its defaults for flags the config omits."""
    vocab = read_vocab(vocab_path)
    backend = Tokenizer(models.WordPiece(vocab, unk_token=specials["unk_token"], max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),  # None: strip exactly when lowercasing
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_token, sep_token = specials["cls_token"], specials["sep_token"]
    if cls_token in vocab and sep_token in vocab:  # else GitTokenizer reports the missing token
        # Unused by GIT's prompts; it makes a saved tokenizer.json add specials like the official one.
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
        )
    return backend


def read_vocab(path: Path) -> dict[str, int]:
    # As transformers' load_vocab: one token per line, id = line number, a repeated token keeps its last id.
    try:
        with open(path, encoding="utf-8") as f:
            return {line.rstrip("\n"): i for i, line in enumerate(f)}
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 ({e.reason} at byte {e.start}); "
                         "restore it from the original checkpoint") from None


def read_tokenizer_json(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for every kind of bad file
        raise ValueError(f"{path} is not a valid tokenizer.json ({first_line(e)}); "
                         "restore it from the original checkpoint or delete it to fall back to vocab.txt") from None


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({first_line(e)}); "
                         "restore it from the original checkpoint") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; restore it from the original checkpoint")
    return data


def token_name(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
