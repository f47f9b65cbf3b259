"""Half precision against fp32 on the parity configs, and padding-only rows that must not NaN.

The parity configs are tests/parity/test_model_parity.py's CASES, built here with our own
classes at the same init (0.2), so no transformers is needed. What docs/parity.md claims:

- greedy tokens equal fp32's until the first step where fp32's two best logits are closer
  than twice the half-precision model's own error on the logits, and may differ from there;
- that error is bounded: fp16 keeps 11 bits of mantissa and moves these logits by ~0.01, bf16
  keeps 8 and moves them by ~0.1, so bf16 meets such near-ties about ten times as often.
Measured here (8 images x 10 tokens per config): fp16 changed 1 of 40 captions, bf16 5 of 40 on
an AVX2 CPU and 4 of 40 on one with AVX512-BF16, whose bf16 products round differently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from git_scratch import GIT
from git_scratch.generation.prefix import decode_step, encode_prefix, prefill
from git_scratch.model.mask import git_attention_mask
from tests.conftest import tiny_config
from tests.hardening.support import CASES, fuzz

BASE = tiny_config()
PARITY_CONFIGS = {
    "image": BASE,
    "video": BASE.replace(n_frames=3),
    "tied": BASE.replace(tie_embeddings=True),
    "gelu_new+eps": BASE.replace(act="gelu_new", norm_eps=1e-7,
                                 vision=dataclasses.replace(BASE.vision, act="gelu", norm_eps=1e-6)),
    "relu": BASE.replace(act="relu", vision=dataclasses.replace(BASE.vision, act="gelu_new")),
}
# Largest |logit - fp32 logit| allowed: about three times what we measured on these configs
# (fp16 0.017, bf16 0.12); unit roundoff is 2**-11 for fp16 and 2**-8 for bf16.
LOGIT_ERROR = {torch.float16: 0.05, torch.bfloat16: 0.4}
ROWS, NEW_TOKENS = 8, 10


def pixels(cfg, rows: int = ROWS) -> torch.Tensor:
    shape = (rows, cfg.n_frames, 3, 32, 32) if cfg.n_frames else (rows, 3, 32, 32)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=list(PARITY_CONFIGS), ids=list(PARITY_CONFIGS))
def checkpoint(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    GIT.from_config(PARITY_CONFIGS[request.param]).save_pretrained(path)
    return path, PARITY_CONFIGS[request.param]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_greedy_tokens(checkpoint, dtype: torch.dtype) -> None:
    path, cfg = checkpoint
    px = pixels(cfg)
    reference = GIT.from_pretrained(path)
    ids32 = reference.generate(px, max_new_tokens=NEW_TOKENS)
    half = GIT.from_pretrained(path, dtype=dtype)  # what --dtype does
    ids = half.generate(px.to(dtype), max_new_tokens=NEW_TOKENS)
    with torch.no_grad():  # both teacher-forced on fp32's tokens: logits at the same contexts
        logits32 = reference(px, ids32[:, :-1])
        logits = half(px.to(dtype), ids32[:, :-1]).float()
    CASES["half-precision generations compared with fp32"] += ROWS
    assert torch.isfinite(logits).all()
    error = (logits - logits32).abs().max().item()
    assert error <= LOGIT_ERROR[dtype], error
    top2 = logits32.topk(2, dim=-1).values
    margins = top2[..., 0] - top2[..., 1]  # (B, T): how far fp32's choice is from the runner-up
    for row in range(ROWS):
        differ = (ids[row] != ids32[row]).nonzero().flatten()
        if len(differ):  # the first divergence must be at a near-tie that this dtype's error can flip
            step = int(differ[0]) - 1  # logits at step t choose the token at t + 1
            assert margins[row, step] <= 2 * error, (row, step, margins[row, step].item(), error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_padding_only_row_gives_no_nan(dtype: torch.dtype) -> None:
    """A row whose text is all padding still sees the image tokens, so no softmax row is empty:
    the forward pass, the cached prefill and a decode step all stay finite, and the other rows
    are unchanged."""
    torch.manual_seed(0)
    model = GIT.from_config(BASE).eval().to(dtype)
    px = pixels(BASE, rows=3).to(dtype)
    input_ids = torch.randint(4, 99, (3, 5))
    mask = torch.ones_like(input_ids)
    mask[1] = 0  # padding only
    mask[2, :3] = 0  # left padding
    CASES["padding-only rows"] += 3
    with torch.no_grad():
        logits = model(px, input_ids, mask)
        alone = model(px[2:], input_ids[2:, 3:])
        prefix = encode_prefix(model, px)
        state, last = prefill(model, prefix, torch.arange(3), input_ids, mask, 2)
        step = decode_step(model, state, torch.full((3, 1), 7), 5)
    assert torch.isfinite(logits).all() and torch.isfinite(last).all() and torch.isfinite(step).all()
    tolerance = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(logits[2, 3:].float(), alone[0].float(), atol=tolerance, rtol=0)


@fuzz(60)
@given(n_image=st.integers(1, 5), segments=st.booleans(),
       text=st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=4))
def test_no_query_row_of_the_mask_is_empty(n_image: int, text: list[list[bool]], segments: bool) -> None:
    """Whatever the padding (all of it included) and packing, every query sees at least one key,
    so attention never divides by zero."""
    text_mask = torch.tensor(text)
    segment_ids = (torch.arange(4).expand(len(text), 4) // 2 + 1) * text_mask if segments else None
    CASES["attention masks with padding-only rows"] += 1
    mask = git_attention_mask(n_image, text_mask, segment_ids)
    assert mask.any(-1).all()
