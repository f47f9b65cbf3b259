"""The result object, compute_transition_scores and `semantics`, without transformers
(tests/parity/test_generate_outputs_parity.py and test_beam_legacy_parity.py compare with it)."""

from __future__ import annotations

import pytest
import torch

from git_scratch import GIT
from git_scratch.generation.outputs import GenerateOutput, compute_transition_scores
from git_scratch.generation.search import SEMANTICS, beam_rules
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config(init_std=0.5)).eval()


def test_transition_scores_pick_each_rows_chosen_token() -> None:
    """Greedy layout by hand: 2 rows, 2 steps, vocab 3; row r chose from row r."""
    scores = (torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]), torch.tensor([[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]))
    sequences = torch.tensor([[1, 2, 0], [1, 1, 2]])  # prompt [1], then two tokens
    assert compute_transition_scores(sequences, scores).tolist() == [[2.0, 6.0], [4.0, 11.0]]
    normalised = compute_transition_scores(sequences, scores, normalize_logits=True)
    torch.testing.assert_close(normalised[0, 0], torch.tensor([0.0, 1.0, 2.0]).log_softmax(-1)[2])


def test_transition_scores_follow_beam_indices_and_zero_after_the_end() -> None:
    scores = (torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[4.0, 5.0], [6.0, 7.0]]))
    sequences = torch.tensor([[1, 0, 1], [1, 1, 0]])
    beam_indices = torch.tensor([[0, 1], [0, -1]])  # row 1 ended after one token
    assert compute_transition_scores(sequences, scores, beam_indices).tolist() == [[0.0, 7.0], [1.0, 0.0]]


def test_transition_scores_need_scores() -> None:
    with pytest.raises(ValueError, match="output_scores=True"):
        compute_transition_scores(torch.tensor([[1]]), ())


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 3}, {"do_sample": True}])
def test_result_object_holds_the_default_sequences(model: GIT, kwargs: dict) -> None:
    pixel_values = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    plain = model.generate(pixel_values, max_new_tokens=6, **kwargs)
    torch.manual_seed(1)
    full = model.generate(pixel_values, max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                          output_logits=True, **kwargs)
    assert isinstance(plain, torch.Tensor) and isinstance(full, GenerateOutput)
    assert torch.equal(plain, full.sequences)
    new = plain.shape[1] - 1
    assert len(full.scores) >= new and len(full.logits) == len(full.scores)
    assert full.scores[0].shape == (2 * kwargs.get("num_beams", 1), model.cfg.vocab_size)


def test_semantics_switch_only_changes_beam_search(model: GIT) -> None:
    pixel_values = torch.randn(2, 3, 32, 32)
    for semantics in set(SEMANTICS) - {"original"}:  # the original's greedy differs: tests/original
        assert torch.equal(model.generate(pixel_values, max_new_tokens=6, semantics=semantics),
                           model.generate(pixel_values, max_new_tokens=6))


def test_unknown_semantics_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match=r"^semantics = 'hf' is not one of 'transformers', 'transformers<4\.50'"):
        beam_rules("hf")


def test_lengths_of_each_generation() -> None:
    """A hypothesis of 4 generated tokens, the last an EOS, after a prompt of 2 tokens."""
    lengths = {name: rules.length(4, 2, eos=True) for name, rules in SEMANTICS.items()}
    assert lengths == {"transformers": 4, "transformers<4.50": 4, "transformers<4.29": 5, "original": 5}
    assert SEMANTICS["transformers<4.29"].length(4, 2, eos=False) == 6
