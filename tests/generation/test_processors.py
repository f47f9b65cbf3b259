"""Each logits processor on hand-made scores (generation/processors.py), and generate's keywords."""

from __future__ import annotations

import pytest
import torch

from git_scratch import GIT
from git_scratch.generation.processors import bad_words, no_repeat_ngram, repetition_penalty
from git_scratch.generation.search import make_processor

INF = float("inf")


def test_repetition_penalty_divides_positive_multiplies_negative_and_skips_pads() -> None:
    sequences = torch.tensor([[0, 0, 1, 3],    # two left pads: token 0 is not "seen"
                              [0, 2, 2, 3]])   # no pads: token 0 is seen
    scores = torch.tensor([[4.0, 2.0, -2.0, 6.0, 1.0],
                           [4.0, 2.0, -2.0, 6.0, 1.0]])
    out = repetition_penalty(2.0, prompt_pads=torch.tensor([2, 0]))(sequences, scores)
    assert torch.equal(out, torch.tensor([[4.0, 1.0, -2.0, 3.0, 1.0],
                                          [2.0, 2.0, -4.0, 3.0, 1.0]]))


def test_no_repeat_ngram_bans_the_token_that_would_repeat_a_bigram() -> None:
    sequences = torch.tensor([[1, 2, 3, 1, 2, 4, 1],   # 1 was followed by 2 and by 2: ban 2
                              [4, 4, 4, 4, 4, 4, 3]])  # 3 never came before: nothing banned
    scores = torch.zeros(2, 5)
    out = no_repeat_ngram(2)(sequences, scores)
    assert torch.equal(out, torch.tensor([[0, 0, -INF, 0, 0], [0, 0, 0, 0, 0]]))
    trigram = no_repeat_ngram(3)(sequences, scores)  # (4, 1) never occurred before the end
    assert torch.equal(trigram, scores)
    assert torch.equal(no_repeat_ngram(9)(sequences, scores), scores)  # shorter than one n-gram


def test_bad_words_single_everywhere_multi_after_its_start_and_never_eos_alone() -> None:
    sequences = torch.tensor([[1, 3, 4], [1, 4, 3]])
    scores = torch.zeros(2, 6)
    out = bad_words([[5], [3, 4, 1], [4, 3, 0], [2]], eos_id=2)(sequences, scores)
    assert torch.equal(out, torch.tensor([[0, -INF, 0, 0, 0, -INF],
                                          [-INF, 0, 0, 0, 0, -INF]]))
    long = bad_words([[9, 9, 9, 9, 1]], eos_id=2)(sequences, scores)  # longer than the rows: no ban
    assert torch.equal(long, scores)


def test_make_processor_orders_like_transformers() -> None:
    # the penalty runs before min length and the caller's constraint sees the penalised scores
    seen: list[torch.Tensor] = []

    def constraint(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(scores)
        return scores

    process = make_processor(1, eos_id=2, min_new_tokens=1, repetition_penalty=2.0, constraint=constraint)
    process(torch.tensor([[1]]), torch.tensor([[4.0, 4.0, 4.0]]))
    assert torch.equal(seen[0], torch.tensor([[4.0, 2.0, -INF]]))


@pytest.mark.parametrize("kwargs, needle", [
    ({"repetition_penalty": 0.0}, "repetition_penalty = 0.0"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size = -1"),
    ({"bad_words_ids": [[]]}, "bad_words_ids = [[]]"),
    ({"bad_words_ids": [3]}, "bad_words_ids = [3]"),
    ({"bad_words_ids": [[3, 500]]}, "tokens [500]"),
])
def test_bad_arguments_are_one_line_errors_before_vision_work(tiny_cfg, monkeypatch, kwargs, needle) -> None:
    model = GIT(tiny_cfg).eval()
    calls = []
    forward = model.vision.forward
    monkeypatch.setattr(model.vision, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    with pytest.raises(ValueError, match=r"; ") as err:
        model.generate(torch.randn(1, 3, 32, 32), max_new_tokens=2, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert calls == []
    model.generate(torch.randn(1, 3, 32, 32), max_new_tokens=2)
    assert calls == [1]  # the counter does see the vision encoder


def test_keywords_off_by_default_and_constraint_is_ones_own_processor(tiny_cfg) -> None:
    torch.manual_seed(0)
    model = GIT(tiny_cfg).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    plain = model.generate(pixel_values, max_new_tokens=5)
    assert torch.equal(model.generate(pixel_values, max_new_tokens=5, repetition_penalty=1.0,
                                      no_repeat_ngram_size=0, bad_words_ids=None), plain)
    banned = int(plain[0, 1])

    def ban(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.index_fill(1, torch.tensor([banned]), -INF)

    assert banned not in model.generate(pixel_values, max_new_tokens=5, constraint=ban)[:, 1:].tolist()[0]
    assert banned not in model.generate(pixel_values, max_new_tokens=5, bad_words_ids=[[banned]])[:, 1:].flatten()
