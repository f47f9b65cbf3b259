"""generate(..., return_dict_in_generate=True) gives transformers' result object field for field,
and compute_transition_scores gives transformers' model.compute_transition_scores (generation/outputs.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from git_scratch import GIT
from git_scratch.generation.outputs import GenerateOutput, compute_transition_scores
from tests.conftest import hf_tiny, save_hf

pytestmark = pytest.mark.parity

ATOL = 1e-5
PROCESSED = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 2}
CASES: dict[str, dict[str, Any]] = {
    "greedy": {},
    "greedy_processors": PROCESSED,
    "sampling": {"do_sample": True, "temperature": 0.8, "top_k": 20},
    "sampling_ret2_top_p": {"do_sample": True, "top_p": 0.9, "num_return_sequences": 2},
    "beam3": {"num_beams": 3},
    "beam3_lp0.6_ret2": {"num_beams": 3, "length_penalty": 0.6, "num_return_sequences": 2},
    "beam3_lp2_early": {"num_beams": 3, "length_penalty": 2.0, "early_stopping": True},
    "beam3_never_processors": {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5, **PROCESSED},
    "beam_sampling": {"num_beams": 3, "do_sample": True, "num_return_sequences": 2},
}
ASKED = {"return_dict_in_generate": True, "output_scores": True, "output_logits": True}


@pytest.fixture(scope="module")
def models(tmp_path_factory, kernels: str):  # built again for each kernel choice
    """TINY_HF's init (0.2), where logits agree within 1e-5 (test_generate_parity's eos_model uses
    0.5, where fp32 rounding alone reaches 4e-5), and an EOS bias that ends some rows mid-batch."""
    torch.manual_seed(0)
    hf = hf_tiny()
    pixel_values = torch.randn(6, 3, 32, 32)
    for bias in range(20):
        with torch.no_grad():
            hf.output.bias[hf.config.eos_token_id] = bias / 4
            out = hf.generate(pixel_values=pixel_values, max_new_tokens=8)
        first = (out[:, 1:] == hf.config.eos_token_id).float().argmax(-1)
        ended = (out[:, 1:] == hf.config.eos_token_id).any(-1)
        if 0 < ended.sum() < len(ended) and (first[ended] > 0).any():
            return hf, GIT.from_pretrained(save_hf(hf, tmp_path_factory.mktemp("outputs") / "ck")), pixel_values
    raise AssertionError("no EOS bias ends rows mid-batch")


def left_padded(bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([2, 5, 3, 1, 4, 5])
    input_ids = torch.randint(3, 99, (6, 5), generator=torch.Generator().manual_seed(1))
    attention_mask = (torch.arange(5)[None] >= 5 - lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    input_ids[torch.arange(6), 5 - lengths] = bos_id
    return input_ids, attention_mask


def both(models, kwargs: dict[str, Any], padded: bool, **asked: Any) -> tuple[Any, Any]:
    """(ours, theirs) from one global seed, on unpadded ([bos]) or left-padded prompts."""
    hf, ours, pixel_values = models
    prompt = dict(zip(["input_ids", "attention_mask"], left_padded(hf.config.bos_token_id))) if padded else {}
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, max_new_tokens=8, **prompt, **kwargs, **asked)
    torch.manual_seed(0)
    return ours.generate(pixel_values, **prompt, max_new_tokens=8, **kwargs, **asked), theirs


def assert_steps_close(mine: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> None:
    assert len(mine) == len(theirs)
    for step, (a, b) in enumerate(zip(mine, theirs)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m, step=step: f"step {step}: {m}")


@pytest.mark.parametrize("padded", [False, True], ids=["bos", "left_padded"])
@pytest.mark.parametrize("name", list(CASES))
def test_result_object_equals_transformers(models, name: str, padded: bool) -> None:
    mine, theirs = both(models, CASES[name], padded, **ASKED)
    assert isinstance(mine, GenerateOutput)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert_steps_close(mine.scores, theirs.scores)
    assert_steps_close(mine.logits, theirs.logits)
    beam = CASES[name].get("num_beams", 1) > 1
    if beam:
        torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=ATOL, rtol=0)
        assert torch.equal(mine.beam_indices, theirs.beam_indices.long())
    else:
        assert mine.sequences_scores is None and mine.beam_indices is None
    hf = models[0]
    for normalize in (False, True):
        expected = hf.compute_transition_scores(theirs.sequences, theirs.scores, getattr(theirs, "beam_indices", None),
                                                normalize_logits=normalize)
        got = compute_transition_scores(mine.sequences, mine.scores, mine.beam_indices, normalize_logits=normalize)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_default_return_is_the_sequences(models, name: str) -> None:
    """The tensor returned by default is the result object's sequences; nothing per step is kept
    unless asked for."""
    plain, _ = both(models, CASES[name], True)
    bare, _ = both(models, CASES[name], True, return_dict_in_generate=True)
    assert isinstance(plain, torch.Tensor)
    assert torch.equal(plain, bare.sequences)
    assert bare.scores is None and bare.logits is None and bare.sequences_scores is None
    assert (bare.beam_indices is not None) == (CASES[name].get("num_beams", 1) > 1)  # as transformers returns it


def test_beam_scores_rebuild_sequences_scores(models) -> None:
    """transformers' documented identity: transition scores summed over a hypothesis, divided by
    its length ** length_penalty, are its sequences_scores."""
    mine, _ = both(models, {"num_beams": 3, "length_penalty": 0.6, "num_return_sequences": 3}, False, **ASKED)
    steps = compute_transition_scores(mine.sequences, mine.scores, mine.beam_indices)
    lengths = (mine.beam_indices >= 0).sum(-1)
    torch.testing.assert_close(steps.sum(-1) / lengths ** 0.6, mine.sequences_scores, atol=ATOL, rtol=0)
