"""Token-for-token equality with transformers' generate, on random models where EOS is common
enough to end some rows mid-batch but not all of them at once."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from git_scratch import GIT
from tests.conftest import hf_tiny, save_hf

pytestmark = pytest.mark.parity


def eos_model(tmp_path, **overrides: Any):
    """A model whose EOS bias is raised until greedy ends some rows early and not others."""
    torch.manual_seed(0)
    hf = hf_tiny(initializer_range=0.5, **overrides)
    frames = hf.config.num_image_with_embedding
    pixel_values = torch.randn((6, frames, 3, 32, 32) if frames else (6, 3, 32, 32))
    for bias in range(4, 20):
        with torch.no_grad():
            hf.output.bias[hf.config.eos_token_id] = bias
            out = hf.generate(pixel_values=pixel_values, max_new_tokens=10)
        ended = (out[:, 1:] == hf.config.eos_token_id).any(-1)
        first = (out[:, 1:] == hf.config.eos_token_id).float().argmax(-1)
        if 0 < ended.sum() < len(ended) and (first[ended] > 0).any():
            return hf, GIT.from_pretrained(save_hf(hf, tmp_path / "ck")), pixel_values
    raise AssertionError("no EOS bias ends rows mid-batch")


SETTINGS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "min_new_tokens": {"min_new_tokens": 4},
    "beam3": {"num_beams": 3},
    "beam5_lp0.6_ret3": {"num_beams": 5, "length_penalty": 0.6, "num_return_sequences": 3},
    "beam3_lp2_ret2": {"num_beams": 3, "length_penalty": 2.0, "num_return_sequences": 2},
    "beam4_early": {"num_beams": 4, "early_stopping": True},
    "beam3_never": {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, kernels: str):  # built again for each kernel choice
    return eos_model(tmp_path_factory.mktemp("gen"))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_captioning_tokens_identical(models, name: str) -> None:
    hf, ours, pixel_values = models
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, max_new_tokens=10, **SETTINGS[name])
    assert torch.equal(ours.generate(pixel_values, max_new_tokens=10, **SETTINGS[name]), theirs)


@pytest.mark.parametrize("name", ["greedy", "beam3", "beam5_lp0.6_ret3"])
def test_left_padded_prompts_identical_and_rowwise(models, name: str) -> None:
    hf, ours, pixel_values = models
    lengths = [2, 5, 3, 1, 4, 5]
    input_ids = torch.zeros(6, 5, dtype=torch.long)
    for row, n in enumerate(lengths):
        input_ids[row, 5 - n:] = torch.randint(3, 99, (n,))
        input_ids[row, 5 - n] = hf.config.bos_token_id
    attention_mask = (torch.arange(5)[None] >= 5 - torch.tensor(lengths)[:, None]).long()
    kwargs = SETTINGS[name]
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                             max_new_tokens=8, **kwargs)
    batched = ours.generate(pixel_values, input_ids, attention_mask, max_new_tokens=8, **kwargs)
    assert torch.equal(batched, theirs)
    per = kwargs.get("num_return_sequences", 1)
    for row, n in enumerate(lengths):  # each row alone gives the same new tokens
        alone = ours.generate(pixel_values[row:row + 1], input_ids[row:row + 1, 5 - n:], max_new_tokens=8, **kwargs)
        mine = batched[row * per:(row + 1) * per, 5:]
        assert torch.equal(alone[:, n:], mine[:, :alone.shape[1] - n])
        assert (mine[:, alone.shape[1] - n:] == (0 if name == "greedy" else hf.config.eos_token_id)).all()


@pytest.mark.parametrize("name", ["greedy", "beam3"])
def test_video_tokens_identical(tmp_path, name: str) -> None:
    hf, ours, pixel_values = eos_model(tmp_path, num_image_with_embedding=2)
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, max_new_tokens=8, **SETTINGS[name])
    assert torch.equal(ours.generate(pixel_values, max_new_tokens=8, **SETTINGS[name]), theirs)


# Beam sampling draws 2K candidates from the global RNG, so each side gets the same seed. "plain"
# leaves top_k to both sides' default (50, transformers' GenerationConfig default); "top_k0"
# switches it off on both.
BEAM_SAMPLING: dict[str, dict[str, Any]] = {
    "plain": {},
    "top_k0": {"top_k": 0},
    "temperature1.3": {"temperature": 1.3},
    "top_k50": {"top_k": 50},
    "top_p0.8": {"top_p": 0.8},
    "t0.7_k20_p0.9": {"temperature": 0.7, "top_k": 20, "top_p": 0.9},
}


def sample_both(hf, ours, seed: int, *args: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, theirs) from the same global seed; args are pixel_values[, input_ids, attention_mask]."""
    names = ["pixel_values", "input_ids", "attention_mask"]
    torch.manual_seed(seed)
    with torch.no_grad():
        theirs = hf.generate(**dict(zip(names, args)), do_sample=True, **kwargs)  # both sides' defaults (top_k 50)
    torch.manual_seed(seed)
    return ours.generate(*args, do_sample=True, **kwargs), theirs


@pytest.mark.parametrize("num_beams", [2, 3])
@pytest.mark.parametrize("name", list(BEAM_SAMPLING))
def test_beam_sampling_tokens_identical(models, num_beams: int, name: str) -> None:
    hf, ours, pixel_values = models
    drawn = set()
    for seed in range(5):
        mine, theirs = sample_both(hf, ours, seed, pixel_values, max_new_tokens=10, num_beams=num_beams,
                                   **BEAM_SAMPLING[name])
        assert torch.equal(mine, theirs), f"seed {seed}"
        drawn.add(tuple(mine.flatten().tolist()))
    assert len(drawn) > 1  # the seeds really steer the draws: this is sampling, not beam search


@pytest.mark.parametrize("kwargs", [
    {"num_beams": 3, "num_return_sequences": 2, "min_new_tokens": 2, "length_penalty": 0.6},
    {"num_beams": 2, "early_stopping": True, "temperature": 0.8},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5, "top_p": 0.9},
], ids=["ret2_min2_lp0.6", "early_t0.8", "never_lp1.5_p0.9"])
def test_beam_sampling_left_padded_prompts_identical(models, kwargs: dict[str, Any]) -> None:
    hf, ours, pixel_values = models
    lengths = [2, 5, 3, 1, 4, 5]
    input_ids = torch.randint(3, 99, (6, 5), generator=torch.Generator().manual_seed(1))
    attention_mask = (torch.arange(5)[None] >= 5 - torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    input_ids[torch.arange(6), 5 - torch.tensor(lengths)] = hf.config.bos_token_id
    for seed in range(5):
        mine, theirs = sample_both(hf, ours, seed, pixel_values, input_ids, attention_mask, max_new_tokens=8, **kwargs)
        assert torch.equal(mine, theirs), f"seed {seed}"
