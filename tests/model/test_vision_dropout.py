"""VisionConfig.attn_dropout drops the ViT's attention probabilities in training and never in
eval, both through nn.MultiheadAttention and through accel's SDPA version of it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from git_scratch import accel
from git_scratch.checkpoints.hub import config_from_hf
from git_scratch.model.vision import ImageEncoder
from tests.conftest import tiny_config


def encoder(attn_dropout: float, kernels: str) -> ImageEncoder:
    torch.manual_seed(0)
    vision = dataclasses.replace(tiny_config().vision, attn_dropout=attn_dropout)
    model = ImageEncoder(vision)
    return accel.optimize(model) if kernels == "accel" else model


@pytest.mark.parametrize("kernels", ["plain", "accel"])
def test_attention_dropout_acts_in_training_only(kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = encoder(0.1, kernels)
    if kernels == "accel":  # the SDPA path must run, not a fallback to nn.MultiheadAttention's own
        monkeypatch.setattr(nn.MultiheadAttention, "forward", lambda *a, **k: pytest.fail("fell back"))
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        first, second = model(pixel_values), model(pixel_values)
        model.eval()
        evaluated = model(pixel_values)
        assert torch.equal(model(pixel_values), evaluated)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, evaluated)


@pytest.mark.parametrize("kernels", ["plain", "accel"])
def test_no_attention_dropout_trains_as_it_evaluates(kernels: str) -> None:
    """With 0 the ViT has no randomness left: the difference above is the attention dropout's."""
    model = encoder(0.0, kernels)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        trained = model.train()(pixel_values)
        torch.testing.assert_close(model.eval()(pixel_values), trained, atol=1e-6, rtol=0)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.1", True])
def test_attention_dropout_outside_0_1_is_refused_naming_the_field(value) -> None:
    with pytest.raises(ValueError, match=r"vision\.attn_dropout = .* must be a number in \[0, 1\)"):
        tiny_config().replace(vision=dataclasses.replace(tiny_config().vision, attn_dropout=value))
    with pytest.raises(ValueError, match=r"vision_config\.attention_dropout in config\.json\); ") as error:
        config_from_hf({"vision_config": {"attention_dropout": value}})
    assert "\n" not in str(error.value)
