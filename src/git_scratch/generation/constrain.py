"""Classification by generation: decoding restricted to a list of allowed answers.

The original GIT classifies ImageNet (and answers closed-vocabulary VQA) by generating the
class name, with decoding kept inside a prefix trie of the class names' token ids, so the
output is always one of them. The score of an answer is the log-probability the model gives
its tokens, EOS included (length_penalty 0), so exp(score) = P(answer | image, prompt).

`semantics="original"` decodes as the original's TrieAutoRegressiveBeamSearch (trie_decoder.py at
commit faae4fb): its greedy, whose ban keeps the token just generated from coming twice in a row, plus
a bonus on the trie's allowed tokens larger than any log-probability gap; one image, one beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..model.git import GIT
from .prefix import encode_prefix, prefill
from .search import SEMANTICS, beam_search, greedy_or_sample, make_processor


class AnswerTrie:
    """Prefix trie over answers' token ids, each answer closed by EOS."""

    def __init__(self, answers: Sequence[Sequence[int]], eos_id: int) -> None:
        if not answers:
            raise ValueError("the list of allowed answers is empty; give at least one answer")
        self.root: dict[int, dict] = {}
        self.index: dict[tuple[int, ...], int] = {}
        for i, answer in enumerate(answers):
            tokens = (*answer, eos_id)
            if len(tokens) == 1:
                raise ValueError(f"allowed answer #{i} has no tokens; remove empty answers")
            self.index.setdefault(tokens, i)  # duplicates: the first one names the class
            node = self.root
            for token in tokens:
                node = node.setdefault(token, {})
        self.longest = max(len(t) for t in self.index)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow `prefix`; [] once an answer is complete."""
        node = self.root
        for token in prefix:
            node = node.get(token)
            if node is None:
                return []
        return list(node)

    def constraint(self, n_prompt: int):
        """A logits processor: every token outside the trie gets -inf."""
        def restrict(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            keep = torch.zeros_like(scores, dtype=torch.bool)
            for row, generated in enumerate(sequences[:, n_prompt:].tolist()):
                keep[row, self.allowed(generated)] = True
            return scores.masked_fill(~keep, -float("inf"))
        return restrict

    def bonus(self, n_prompt: int):
        """The original's rule instead, on row 0 alone as the original has it: the allowed tokens' scores
        (log-probabilities) gain max - min + 1, so the best allowed one always wins (docs/generation.md)."""
        def lift(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            allowed = self.allowed(sequences[0, n_prompt:].tolist())
            lifted = scores.clone()
            # max - min of the log-probabilities: the original's of the logits, the same number up to rounding
            lifted[0, allowed] += scores.max() - scores.min() + 1
            return lifted
        return lift


@dataclass(frozen=True)
class Choice:
    index: int  # position of the answer in the list given
    score: float  # log P(answer tokens + EOS | image, prompt)


@torch.no_grad()
def classify(model: GIT, pixel_values: torch.Tensor, answers: Sequence[Sequence[int]], *,
             prompt_ids: Sequence[int] | None = None, num_beams: int = 1,
             semantics: str = "transformers") -> list[Choice]:
    """For each image, the allowed answer the model generates and its score.

    `answers` are token ids without BOS/EOS (e.g. tokenizer.encode("golden retriever")).
    `prompt_ids` defaults to [bos] (captioning-style); a VQA model takes [bos] + question ids.
    num_beams=1 is greedy inside the trie; more beams search more of it. `semantics="original"`:
    the original's trie decoder (one image, num_beams 1), whose score is the original's number,
    sum(log p + bonus) / (tokens + 1), not a log-probability."""
    if semantics not in ("transformers", "original"):
        raise ValueError(f"semantics = {semantics!r} is not a trie decoder classify knows; pass 'transformers' "
                         "(a trie constraint) or 'original' (the original's trie decoder)")
    cfg = model.cfg
    trie = AnswerTrie(answers, cfg.eos_id)
    if semantics == "original" and (pixel_values.shape[0] != 1 or num_beams != 1):
        raise ValueError(f"semantics='original' classifies one image with num_beams=1 (the original's trie decoder "
                         f"has one cursor), got {pixel_values.shape[0]} images and num_beams={num_beams}; "
                         "call it per image")
    prefix = encode_prefix(model, pixel_values.to(model.lm_head.weight.device))
    n_images = prefix.keys[0].shape[0]
    prompt = list(prompt_ids) if prompt_ids is not None else [cfg.bos_id]
    input_ids = torch.tensor([prompt] * n_images * num_beams, device=prefix.keys[0].device)
    image_index = torch.arange(n_images, device=input_ids.device).repeat_interleave(num_beams)
    state, logits = prefill(model, prefix, image_index, input_ids, torch.ones_like(input_ids), trie.longest)
    if semantics == "original":
        process = make_processor(len(prompt), eos_id=cfg.eos_id, constraint=trie.bonus(len(prompt)))
        sequences, scores = greedy_or_sample(model, state, logits, input_ids, process, max_new_tokens=trie.longest,
                                             eos_id=cfg.eos_id, pad_id=cfg.pad_id, sample=False, generator=None,
                                             rules=SEMANTICS["original"])
    else:
        process = make_processor(len(prompt), eos_id=cfg.eos_id, constraint=trie.constraint(len(prompt)))
        sequences, scores, _ = beam_search(model, state, logits, input_ids, process, num_beams=num_beams,
                                           max_new_tokens=trie.longest, eos_id=cfg.eos_id, pad_id=cfg.eos_id,
                                           length_penalty=0.0, early_stopping=False, num_return_sequences=1)
    choices = []
    for seq, score in zip(sequences[:, len(prompt):].tolist(), scores.tolist()):
        end = seq.index(cfg.eos_id) + 1
        choices.append(Choice(trie.index[tuple(seq[:end])], score))
    return choices
