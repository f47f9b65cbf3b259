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
