"""Logits processors: small functions that each return a `Processor`, composed by search.py's
`make_processor` in transformers' order.

A `Processor` maps (sequences (R, t), scores (R, V)) to scores (R, V). `sequences` is every row
so far, the prompt included, left padding included: transformers passes its `input_ids` the same
way, so n-grams and bad words are matched across the prompt and the pads as it does. Under greedy
and sampling `scores` are logits; under beam search they are log-probabilities (both as in
transformers). Any function of this type can be passed to `generate(..., constraint=...)`.

Semantics are transformers 5.24's `generation/logits_process.py`: RepetitionPenaltyLogitsProcessor,
NoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor; tests/parity/test_logits_processors_parity.py
checks the tokens are identical.

Letters: R rows (images x beams or returned sequences), t tokens so far, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (sequences so far (R, t), scores (R, V)) -> scores; how constraints and warpers plug in.
Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repetition_penalty(penalty: float, prompt_pads: torch.Tensor | None = None) -> Processor:
    """Every token already in a row has its score divided by `penalty` if positive, multiplied if
    negative (CTRL, Keskar et al. 2019): above 1 discourages repeats, below 1 encourages them.
    The prompt counts; its left padding does not: `prompt_pads` (R,) is each row's number of pad
    positions, as transformers reads them from the attention mask."""
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"repetition_penalty = {penalty!r} must be a number > 0; use 1.0 for none, "
                         "above 1 to discourage repeats")

    def process(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        seen = sequences.clamp(max=vocab)  # ids past the LM head cannot be generated: send them to a spare column
        if prompt_pads is not None:
            positions = torch.arange(sequences.shape[1], device=sequences.device)
            seen = seen.masked_fill(positions[None] < prompt_pads[:, None].to(seen.device), vocab)
        padded = F.pad(scores, (0, 1))  # (R, V + 1): the spare column
        picked = padded.gather(1, seen)  # (R, t)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        return padded.scatter(1, seen, picked)[:, :vocab]

    return process


def no_repeat_ngram(size: int) -> Processor:
    """No n-gram of `size` tokens occurs twice in a row: a token that would complete an n-gram
    already present (prompt and pads included) gets -inf."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"no_repeat_ngram_size = {size!r} must be a positive integer; use 0 for none")

    def process(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = sequences.shape[1]
        if t < size:
            return scores  # no complete n-gram yet
        # The next token completes an n-gram that starts with the last size-1 tokens; every earlier
        # window whose first size-1 tokens equal them bans its own last token.
        suffix = sequences[:, t + 1 - size:]  # (R, size - 1)
        windows = sequences.unfold(1, size, 1)  # (R, t - size + 1, size)
        matches = (windows[..., :-1] == suffix[:, None]).all(-1)  # (R, t - size + 1)
        vocab = scores.shape[-1]
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], -float("inf"))

    return process


def bad_words(words: list[list[int]], *, eos_id: int, vocab_size: int | None = None) -> Processor:
    """No row ever ends with one of `words` (each a list of token ids): a one-token word gets -inf
    everywhere; a longer word's last token gets -inf where the row ends with the word's other
    tokens. `[eos_id]` alone is dropped, as transformers does, so every row can still end."""
    if not isinstance(words, list) or not words or not all(
            isinstance(w, list) and w and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in w)
            for w in words):
        raise ValueError(f"bad_words_ids = {words!r} must be a non-empty list of non-empty lists of token ids; "
                         "e.g. [[1037], [2003, 4937]]")
    out_of_range = sorted({t for w in words for t in w if vocab_size is not None and t >= vocab_size})
    if out_of_range:
        raise ValueError(f"bad_words_ids names tokens {out_of_range} but the model's vocabulary has {vocab_size}; "
                         "remove them")
    words = [w for w in words if w != [eos_id]]
    singles = sorted({w[0] for w in words if len(w) == 1})
    longer = [w for w in words if len(w) > 1]

    def process(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        banned = torch.zeros_like(scores, dtype=torch.bool)  # (R, V)
        banned[:, singles] = True
        for word in longer:
            head = torch.tensor(word[:-1], device=sequences.device)
            if len(head) > sequences.shape[1]:
                continue  # the row is shorter than the word's start
            banned[:, word[-1]] |= (sequences[:, -len(head):] == head).all(-1)
        return scores.masked_fill(banned, -float("inf"))

    return process
