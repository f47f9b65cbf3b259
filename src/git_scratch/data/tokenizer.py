"""GIT's tokenizer: BERT's uncased WordPiece, as a thin wrapper over the `tokenizers` library.

Official checkpoints (microsoft/git-*) ship bert-base-uncased's tokenizer.json. A directory with
only vocab.txt gets the pipeline transformers' BertTokenizer builds from it. A word-level
tokenizer serves the synthetic demo, which needs no subwords.

GIT's prompts, as in the VQA example of transformers/models/git/modeling_git.py:

    captioning   [CLS]                    the model generates the caption, then [SEP]
    question     [CLS] what is this ?     no [SEP]: the answer continues the question

Decoding tidies the spaces WordPiece leaves around apostrophes ("don ' t" -> "don't") when
tokenizer_config.json's clean_up_tokenization_spaces says so, as transformers does. A file without
the flag gets BERT's own default, true (every transformers before 5, and 5.x's Python
BertTokenizer); transformers 5.x's tokenizers-backed BertTokenizer reads a missing flag as false
and gives "don ' t", which is not what GIT's captions looked like. save_pretrained writes the flag,
so transformers decodes our files as we do.

References: transformers/models/bert/tokenization_bert.py (the WordPiece pipeline and defaults),
tokenization_utils_base.py (clean_up_tokenization).
Letters: B batch, T text tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from ..atomic import atomic_write_text
from .inputs import ModelInputs
from .tokenizer_files import bert_wordpiece, is_bert, read_json_object, read_tokenizer_json, token_name

# transformers' BERT defaults; tokenizer_config.json may rename any of them.
DEFAULT_SPECIALS: dict[str, str] = {
    "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
}
DEFAULT_MASK = "[MASK]"
# transformers' clean_up_tokenization (tokenization_utils_base.py), in its order: spaces that
# joining WordPiece tokens puts before punctuation and around apostrophes.
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
# The word-level specials and their ids; the words follow from id 4.
WORD_LEVEL_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


class GitTokenizer:
    """A `tokenizers.Tokenizer` plus GIT's special ids: bos [CLS], eos [SEP], pad [PAD], unk [UNK]."""

    def __init__(self, backend: Tokenizer, *, cls_token: str = "[CLS]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", unk_token: str = "[UNK]", mask_token: str | None = None,
                 model_max_length: int | None = None, clean_up_tokenization_spaces: bool = True,
                 source: str = "tokenizer") -> None:
        # Truncation and padding are ours to do (left padding in batch_prompts); a tokenizer.json
        # that bakes them in would silently cut or pad every encode.
        backend.no_truncation()
        backend.no_padding()
        self.special_tokens = {"cls_token": cls_token, "sep_token": sep_token, "pad_token": pad_token,
                               "unk_token": unk_token}
        if mask_token is not None:  # GIT never uses [MASK]; kept so save_pretrained writes it back
            self.special_tokens["mask_token"] = mask_token
        for role, token in self.special_tokens.items():
            if backend.token_to_id(token) is None:
                raise ValueError(f"{source}: {role} {token!r} is not in the vocabulary; "
                                 f"name the right token as {role} in tokenizer_config.json")
        # As in transformers: specials are skipped by decode(skip_special_tokens=True), and a
        # literal "[SEP]" in the text maps to its id instead of being split into [ SEP ].
        backend.add_special_tokens(list(self.special_tokens.values()))
        self.backend = backend
        # What decode(skip_special_tokens=True) drops: every special token but [UNK], which stands
        # for text the tokenizer could not read and must stay visible.
        self.skipped_ids = {i for i, token in backend.get_added_tokens_decoder().items() if token.special}
        self.skipped_ids.discard(backend.token_to_id(unk_token))
        self.bos_id: int = backend.token_to_id(cls_token)
        self.eos_id: int = backend.token_to_id(sep_token)
        self.pad_id: int = backend.token_to_id(pad_token)
        self.unk_id: int = backend.token_to_id(unk_token)
        self.model_max_length = model_max_length
        # transformers skips the clean-up for BPE models, where it would eat real spaces.
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces and not isinstance(backend.model, models.BPE)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path) -> GitTokenizer:
        """Load tokenizer.json from a checkpoint directory, or rebuild BERT's WordPiece from vocab.txt."""
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such directory; pass a checkpoint directory "
                                    "holding tokenizer.json or vocab.txt")
        config_path = directory / "tokenizer_config.json"
        config = read_json_object(config_path) if config_path.is_file() else {}
        specials = {role: token_name(config.get(role)) or default for role, default in DEFAULT_SPECIALS.items()}
        mask_token = token_name(config.get("mask_token")) or DEFAULT_MASK
        if (directory / "tokenizer.json").is_file():
            backend = read_tokenizer_json(directory / "tokenizer.json")
        elif (directory / "vocab.txt").is_file():
            backend = bert_wordpiece(directory / "vocab.txt", config, specials)
        else:
            raise FileNotFoundError(f"{directory} has no tokenizer.json or vocab.txt; copy them from the original "
                                    "checkpoint (e.g. microsoft/git-base) or build one with GitTokenizer.word_level")
        if backend.token_to_id(mask_token) is None:
            mask_token = None
        max_length = config.get("model_max_length")
        max_length = max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else None
        clean_up = config.get("clean_up_tokenization_spaces")
        if clean_up is not None and not isinstance(clean_up, bool):
            raise ValueError(f"{config_path}: clean_up_tokenization_spaces = {clean_up!r:.40} is not true or false; "
                             "write true or false in that file")
        return cls(backend, **specials, mask_token=mask_token, model_max_length=max_length,
                   clean_up_tokenization_spaces=is_bert(backend) if clean_up is None else clean_up,
                   source=str(directory))

    @classmethod
    def word_level(cls, words: Iterable[str]) -> GitTokenizer:
        """Whole words, lowercased, split on whitespace and punctuation.

        Ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3, then `words` in sorted order. Decoding joins words
        with single spaces and tidies none, so a sentence of vocabulary words comes back exactly.
        """
        if isinstance(words, (str, bytes)):
            raise ValueError(f"word_level got one string {words[:40]!r}; pass a list of words, e.g. text.split()")
        normalizer = normalizers.Lowercase()
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        unique = set(words)
        for word in unique:
            # A word the pipeline can never produce would be a vocabulary entry no text reaches.
            pieces = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(word)) if isinstance(word, str) else []
            if [piece for piece, _ in pieces] != [word]:
                raise ValueError(f"word_level: {word!r} is not a single lowercase word or punctuation mark; "
                                 "split it on spaces and punctuation and lowercase it")
        vocab = {token: i for i, token in enumerate(WORD_LEVEL_SPECIALS + sorted(unique))}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        backend.normalizer = normalizer
        backend.pre_tokenizer = pre_tokenizer
        return cls(backend, clean_up_tokenization_spaces=False, source="word_level")

    # --- encoding ----------------------------------------------------------------------------

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of `text` with no special tokens; "" gives []."""
        return self.backend.encode(_as_text(text), add_special_tokens=False).ids

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True,
                 padding: bool | Literal["longest", "max_length", "do_not_pad"] = False,
                 truncation: bool = False, max_length: int | None = None,
                 padding_side: Literal["right", "left"] = "right",
                 return_tensors: Literal["pt", "np"] | None = None) -> ModelInputs:
        """A transformers tokenizer's call, and its ids: {"input_ids", "attention_mask"}, rows of
        [CLS] text [SEP] (add_special_tokens=False: the text alone), lists for one text, lists of
        lists for several, (B, T) arrays with return_tensors "pt" / "np". padding and truncation
        as transformers' (right-padded, truncation to max_length or model_max_length, specials
        included). Generation prompts ([CLS] + question, no [SEP], left-padded): batch_prompts."""
        texts = [text] if isinstance(text, (str, bytes)) else text
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"text is {type(text).__name__} {str(text)[:40]!r}; pass a string or a non-empty "
                             "list of strings")
        pad_to = _pad_target(padding, max_length, padding_side, return_tensors)
        limit = (max_length or self.model_max_length) if truncation else None
        head, tail = ([self.bos_id], [self.eos_id]) if add_special_tokens else ([], [])
        if limit is not None and limit < len(head + tail):
            raise ValueError(f"max_length = {limit} leaves no room for text after [CLS] and [SEP]; raise it")
        rows = []
        for i, one in enumerate(texts):
            try:
                rows.append(head + self.encode(one)[: None if limit is None else limit - len(head + tail)] + tail)
            except ValueError as e:
                raise ValueError(f"text[{i}]: {e}") from None
        width = max(len(row) for row in rows) if pad_to == "longest" else pad_to or 0
        input_ids, attention_mask = [], []
        for row in rows:
            pad = max(width - len(row), 0)
            left, right = (pad, 0) if padding_side == "left" else (0, pad)
            input_ids.append([self.pad_id] * left + row + [self.pad_id] * right)
            attention_mask.append([0] * left + [1] * len(row) + [0] * right)
        if return_tensors is not None:
            if len({len(row) for row in input_ids}) > 1:
                raise ValueError(f"the texts give rows of {min(map(len, input_ids))} to {max(map(len, input_ids))} "
                                 "tokens, which make no tensor; pass padding=True")
            make = torch.tensor if return_tensors == "pt" else np.array
            return ModelInputs(input_ids=make(input_ids), attention_mask=make(attention_mask))
        if isinstance(text, (str, bytes)):
            return ModelInputs(input_ids=input_ids[0], attention_mask=attention_mask[0])
        return ModelInputs(input_ids=input_ids, attention_mask=attention_mask)

    def prompt_ids(self, text: str | bytes | None = None) -> list[int]:
        """GIT's prompt: [CLS] alone for captioning, [CLS] + question tokens (no [SEP]) for a question."""
        return [self.bos_id] + (self.encode(text) if text is not None else [])

    def original_prompt_ids(self, question: str | bytes, max_text_len: int = 40) -> list[int]:
        """The original implementation's VQA prompt (GenerativeImage2Text's inference.py): the question's
        first `max_text_len` tokens (its tokenizer's truncation), of which only the last max_text_len - 2
        are kept, after [CLS]; no [SEP]. A 45-token question loses its last 5 tokens and then its
        first 2. Short questions give prompt_ids(question)."""
        payload = self.encode(question)[:max_text_len]
        return [self.bos_id] + payload[-(max_text_len - 2):]

    def batch_prompts(self, texts: Sequence[str | bytes | None], *,
                      original: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompts: input_ids (B, T) long, attention_mask (B, T) long, 1 = token, 0 = padding.

        Left padding puts every prompt's last token in the same column, so each decoding step
        appends one column to all rows; the model must take positions from attention_mask.
        """
        if isinstance(texts, (str, bytes)) or not texts:
            raise ValueError(f"batch_prompts needs a non-empty list with one prompt (or None) per image, "
                             f"got {texts!r:.60}")
        # original: questions cut as the original implementation cuts them (original_prompt_ids)
        prompts = [self.original_prompt_ids(text) if original and text is not None else self.prompt_ids(text)
                   for text in texts]
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        return input_ids, attention_mask

    # --- decoding ----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The text of `ids`, as transformers decodes it, except that nothing unknown vanishes:
        skip_special_tokens drops [CLS], [SEP], [PAD] and [MASK] but keeps [UNK], and an id the
        tokenizer does not have (a model with a larger vocabulary can generate one) reads
        "[UNK id N]" instead of being skipped. Spaces are tidied as clean_up_tokenization_spaces says."""
        ids = _id_list(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.skipped_ids]
        pieces, known = [], []
        for i in ids:
            if i < 2**32 and self.backend.id_to_token(i) is not None:  # the backend's ids are u32
                known.append(i)
                continue
            pieces += [self.backend.decode(known, skip_special_tokens=False), f"[UNK id {i}]"]
            known = []
        pieces.append(self.backend.decode(known, skip_special_tokens=False))
        text = " ".join(piece for piece in pieces if piece)
        if self.clean_up_tokenization_spaces:
            for spaced, tidy in CLEAN_UP:
                text = text.replace(spaced, tidy)
        return text

    def batch_decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor,
                     skip_special_tokens: bool = True) -> list[str]:
        """One string per row of `sequences` (a list of id lists, or a (B, T) tensor)."""
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    def decode_answer(self, ids: Sequence[int] | torch.Tensor,
                      prompt: Sequence[int] | torch.Tensor | None = None) -> str:
        """The generated text up to the first [SEP], specials dropped, [UNK] kept (decode).

        `ids`: a row of answer()'s output (generated ids only), or of generate's with the
        `prompt` it came from (prompt_ids(question), or that row of input_ids, padded or not).
        Such a row must be left padding, then exactly the prompt: the cut falls right after it,
        whatever the padding, and a row that does not start with its prompt is refused."""
        ids = _id_list(ids)
        if prompt is not None:
            if isinstance(prompt, int) or (isinstance(prompt, torch.Tensor) and prompt.dim() == 0):
                raise ValueError(f"decode_answer: prompt = {int(prompt)} is a length, which cannot locate the cut in "
                                 "a left-padded row; pass the prompt's ids (tokenizer.prompt_ids(question) or the "
                                 "row of input_ids)")
            expected = _without_left_padding(_id_list(prompt), self.pad_id)
            row = _without_left_padding(ids, self.pad_id)
            if not expected:
                raise ValueError("decode_answer: the prompt holds no token but padding; pass the prompt the row "
                                 "was generated from, at least [CLS]")
            if row[: len(expected)] != expected:
                raise ValueError(f"decode_answer: the row {row[:8]} does not start with its prompt {expected[:8]} "
                                 "after the left padding; pass the prompt this row was generated from, or the "
                                 "generated ids alone without a prompt")
            ids = row[len(expected):]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.decode(ids).strip()

    # --- saving ------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write tokenizer.json and a tokenizer_config.json that transformers.AutoTokenizer loads."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "tokenizer.json", self.backend.to_str(pretty=True))
        config = json.dumps(self._transformers_config(), indent=2) + "\n"
        atomic_write_text(directory / "tokenizer_config.json", config)

    def _transformers_config(self) -> dict[str, Any]:
        normalizer = self.backend.normalizer
        config: dict[str, Any] = {
            "do_lower_case": normalizer is not None and normalizer.normalize_str("A") == "a",
            **self.special_tokens,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if is_bert(self.backend):
            # transformers' BertTokenizer rebuilds the pipeline from these flags, so they must
            # describe the normaliser in tokenizer.json exactly.
            config.update(tokenizer_class="BertTokenizer", strip_accents=normalizer.strip_accents,
                          tokenize_chinese_chars=normalizer.handle_chinese_chars)
        else:
            # Any other pipeline (word_level) would be rebuilt wrongly as WordPiece; this class
            # loads tokenizer.json as it is.
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        return config


# --- helpers ---------------------------------------------------------------------------------


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"text is not UTF-8 ({e.reason} at byte {e.start}); "
                             "decode it with its real encoding first") from None
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}; pass '' for no text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. from errors="surrogateescape"
        raise ValueError(f"text has a character that is not valid UTF-8 at index {e.start}; "
                         "decode the source with its real encoding first") from None
    return text


def _id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D tensor of token ids, got shape {tuple(ids.shape)}; "
                             "use batch_decode for a batch")
        ids = ids.tolist()
    ids = [int(i) for i in ids]
    if ids and min(ids) < 0:
        raise ValueError(f"token id {min(ids)} is negative; mask out ignore-index labels (-100) before decoding")
    return ids


def _pad_target(padding: bool | str, max_length: int | None, padding_side: str,
                return_tensors: str | None) -> str | int | None:
    """The call's padding as "longest", a width or None (no padding), its arguments checked first."""
    if return_tensors not in (None, "pt", "np") or padding_side not in ("right", "left"):
        raise ValueError(f"return_tensors = {return_tensors!r} or padding_side = {padding_side!r} is not supported; "
                         "use 'pt', 'np' or None (lists), and 'right' or 'left'")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise ValueError(f"max_length = {max_length!r} is not a token count; pass a positive integer or None")
    if padding is False or padding == "do_not_pad":
        return None
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs a length; pass max_length=N")
        return max_length
    raise ValueError(f"padding = {padding!r} is not supported; use True, 'longest', 'max_length' or False")


def _without_left_padding(ids: list[int], pad_id: int) -> list[int]:
    start = next((i for i, token in enumerate(ids) if token != pad_id), len(ids))
    return ids[start:]
