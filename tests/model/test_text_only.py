"""Text alone (pixel_values=None): the decoder over zero image tokens, forward and cached decoding."""

from __future__ import annotations

import pytest
import torch

from git_scratch import GIT, answer
from git_scratch.model.mask import git_attention_mask
from tests.conftest import tiny_config


def test_the_mask_of_zero_image_tokens_is_causal_over_real_keys() -> None:
    text_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    causal = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    expected = causal[None, None] & text_mask[:, None, None, :]  # (2, 1, 3, 3)
    assert torch.equal(git_attention_mask(0, text_mask), expected)


def test_text_only_left_padded_rows_equal_rows_alone() -> None:
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config()).eval()
    input_ids = torch.randint(3, 99, (2, 6))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    with torch.no_grad():
        logits = model(None, input_ids, attention_mask)
        assert logits.shape == (2, 6, 99)
        torch.testing.assert_close(logits[0, 2:], model(None, input_ids[:1, 2:])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[1], model(None, input_ids[1:])[0], atol=1e-5, rtol=0)


def test_text_only_cached_greedy_equals_full_forward_argmax() -> None:
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(init_std=0.5)).eval()
    prompt = torch.tensor([[1, 7, 8], [1, 9, 10]])
    sequences = model.generate(None, prompt, max_new_tokens=6, min_new_tokens=6)  # no EOS: every step counts
    with torch.no_grad():
        logits = model(None, sequences[:, :-1])
    assert torch.equal(logits[:, 2:].argmax(-1), sequences[:, 3:])


def test_answer_without_an_image_says_what_to_do() -> None:
    model = GIT.from_config(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"^pixel_values is None here, where an image is needed; pass ") as error:
        answer(model, None, [[1, 5]])
    assert "\n" not in str(error.value)
