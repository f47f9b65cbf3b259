"""Text alone, no pixel_values: transformers' GitForCausalLM runs its decoder over the text with
zero image tokens, and so do GIT.forward and generate."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from git_scratch import GIT
from tests.conftest import hf_tiny, save_hf

pytestmark = pytest.mark.parity


def prompts(batch: int, n_text: int, bos: int) -> torch.Tensor:
    input_ids = torch.randint(3, 99, (batch, n_text))
    input_ids[:, 0] = bos
    return input_ids


def test_text_only_logits_equal_transformers(tmp_path) -> None:
    torch.manual_seed(5)
    hf = hf_tiny()
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    input_ids = prompts(3, 7, hf.config.bos_token_id)
    with torch.no_grad():
        theirs = hf(input_ids=input_ids).logits
        logits = ours(None, input_ids)
    assert logits.shape == theirs.shape == (3, 7, hf.config.vocab_size)  # no image positions at all
    torch.testing.assert_close(logits, theirs, atol=1e-5, rtol=0)
    assert logits.softmax(-1).max() > 0.1  # ten times uniform (1/99): a wrong weight could not hide


def test_text_only_left_padded_logits_equal_transformers(tmp_path) -> None:
    torch.manual_seed(6)
    hf = hf_tiny()
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    input_ids = prompts(3, 6, hf.config.bos_token_id)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0
    attention_mask[1, :1] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # as its generate gives
    real = attention_mask.bool()
    with torch.no_grad():
        theirs = hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logits = ours(None, input_ids, attention_mask)
    torch.testing.assert_close(logits[real], theirs[real], atol=1e-5, rtol=0)


def text_eos_model(tmp_path):
    """A model whose EOS bias is raised until greedy text-only decoding ends some rows early and not others."""
    torch.manual_seed(0)
    hf = hf_tiny(initializer_range=0.5)
    input_ids = prompts(6, 3, hf.config.bos_token_id)
    for bias in range(4, 20):
        with torch.no_grad():
            hf.output.bias[hf.config.eos_token_id] = bias
            out = hf.generate(input_ids=input_ids, max_new_tokens=10)
        new = out[:, input_ids.shape[1]:]
        ended = (new == hf.config.eos_token_id).any(-1)
        first = (new == hf.config.eos_token_id).float().argmax(-1)
        if 0 < ended.sum() < len(ended) and (first[ended] > 0).any():
            return hf, GIT.from_pretrained(save_hf(hf, tmp_path / "ck")), input_ids
    raise AssertionError("no EOS bias ends rows mid-batch")


SETTINGS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "beam3": {"num_beams": 3},
    "beam3_ret2": {"num_beams": 3, "num_return_sequences": 2},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, kernels: str):  # built again for each kernel choice
    return text_eos_model(tmp_path_factory.mktemp("text"))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_text_only_tokens_identical(models, name: str) -> None:
    hf, ours, input_ids = models
    with torch.no_grad():
        theirs = hf.generate(input_ids=input_ids, max_new_tokens=10, **SETTINGS[name])
    assert torch.equal(ours.generate(None, input_ids, max_new_tokens=10, **SETTINGS[name]), theirs)


def test_no_prompt_and_no_image_starts_from_bos(models) -> None:
    hf, ours, _ = models
    with torch.no_grad():
        theirs = hf.generate(max_new_tokens=6)
    mine = ours.generate(None, max_new_tokens=6)
    assert mine[0, 0] == hf.config.bos_token_id
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("name", ["greedy", "beam3"])
def test_text_only_left_padded_prompts_identical_and_rowwise(models, name: str) -> None:
    """transformers' cached text-only decoding widens a 2-D padding mask by its image token count
    (modeling_git.py, GitModel.forward) although no image is cached, so with left padding we compare
    with its uncached decoding, which runs the full mask each step; unpadded prompts agree either way."""
    hf, ours, _ = models
    lengths = [2, 5, 3, 1, 4, 5]
    input_ids = torch.zeros(6, 5, dtype=torch.long)
    for row, n in enumerate(lengths):
        input_ids[row, 5 - n:] = torch.randint(3, 99, (n,))
        input_ids[row, 5 - n] = hf.config.bos_token_id
    attention_mask = (torch.arange(5)[None] >= 5 - torch.tensor(lengths)[:, None]).long()
    kwargs = SETTINGS[name]
    with torch.no_grad():
        theirs = hf.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8,
                             use_cache=False, **kwargs)
    batched = ours.generate(None, input_ids, attention_mask, max_new_tokens=8, **kwargs)
    assert torch.equal(batched, theirs)
    for row, n in enumerate(lengths):  # each row alone gives the same new tokens
        alone = ours.generate(None, input_ids[row:row + 1, 5 - n:], max_new_tokens=8, **kwargs)
        assert torch.equal(alone[0, n:], batched[row, 5:5 + alone.shape[1] - n])
