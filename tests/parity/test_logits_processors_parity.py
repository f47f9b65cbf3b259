"""repetition_penalty, no_repeat_ngram_size and bad_words_ids give transformers' tokens, greedy and
beam, alone and combined, on unpadded and left-padded prompts (generation/processors.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.parity.test_generate_parity import eos_model

pytestmark = pytest.mark.parity

# Word ids are picked from what the unprocessed model generates (see `bad_words`), so the ban bites.
SETTINGS: dict[str, dict[str, Any]] = {
    "rep1.3": {"repetition_penalty": 1.3},
    "rep0.8": {"repetition_penalty": 0.8},
    "ngram2": {"no_repeat_ngram_size": 2},
    "ngram3": {"no_repeat_ngram_size": 3},
    "bad_single": {"bad_words_ids": "single"},
    "bad_multi": {"bad_words_ids": "multi"},
    "combined": {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "bad_words_ids": "both",
                 "min_new_tokens": 2},
}
SEARCHES = {"greedy": {}, "beam3": {"num_beams": 3}}
MAX_NEW = 20  # long enough that a 3-gram repeats in every search


@pytest.fixture(scope="module")
def models(tmp_path_factory, kernels: str):  # built again for each kernel choice
    return eos_model(tmp_path_factory.mktemp("proc"))


def left_padded(bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Six prompts of 1..5 tokens, left-padded with 0 (GIT's pad) to 5, repeats inside them."""
    lengths = torch.tensor([2, 5, 3, 1, 4, 5])
    input_ids = torch.randint(3, 12, (6, 5), generator=torch.Generator().manual_seed(1))  # few ids: repeats
    attention_mask = (torch.arange(5)[None] >= 5 - lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    input_ids[torch.arange(6), 5 - lengths] = bos_id
    return input_ids, attention_mask


def bad_words(plain: torch.Tensor, kind: str, n_prompt: int) -> list[list[int]]:
    """Words the unprocessed generation contains: its first new token, and its first new bigram."""
    single = [[int(plain[0, n_prompt])]]
    multi = [plain[1, n_prompt + 1:n_prompt + 3].tolist(), [5, 7, 9]]
    return {"single": single, "multi": multi, "both": single + multi}[kind]


def run_both(hf, ours, pixel_values, input_ids, attention_mask, name: str, search: str,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ours, theirs, unprocessed theirs) with the setting's processors."""
    prompt = {} if input_ids is None else {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad():
        plain = hf.generate(pixel_values=pixel_values, max_new_tokens=MAX_NEW, **prompt, **SEARCHES[search])
    kwargs = dict(SETTINGS[name], **SEARCHES[search])
    if "bad_words_ids" in kwargs:
        kwargs["bad_words_ids"] = bad_words(plain, kwargs["bad_words_ids"], 1 if input_ids is None else 5)
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, max_new_tokens=MAX_NEW, **prompt, **kwargs)
    mine = ours.generate(pixel_values, input_ids, attention_mask, max_new_tokens=MAX_NEW, **kwargs)
    return mine, theirs, plain


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("name", list(SETTINGS))
def test_tokens_identical(models, name: str, search: str) -> None:
    hf, ours, pixel_values = models
    mine, theirs, plain = run_both(hf, ours, pixel_values, None, None, name, search)
    assert torch.equal(mine, theirs)
    assert not torch.equal(theirs, plain)  # the processor changed something: the test has teeth


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("name", ["rep1.3", "rep0.8", "ngram2", "bad_multi", "combined"])
def test_left_padded_prompts_identical(models, name: str, search: str) -> None:
    hf, ours, pixel_values = models
    input_ids, attention_mask = left_padded(hf.config.bos_token_id)
    mine, theirs, plain = run_both(hf, ours, pixel_values, input_ids, attention_mask, name, search)
    assert torch.equal(mine, theirs)
    assert not torch.equal(theirs, plain)
