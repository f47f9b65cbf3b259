"""The activations a GIT config may name (config.ACTIVATION_NAMES), built as modules from their HF names."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x); the ViT was trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# gelu_new, gelu_fast and gelu_pytorch_tanh are one formula (the tanh approximation) written
# three ways in HF; they agree to float rounding, so all three map to torch's fused kernel.
_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_new": partial(nn.GELU, approximate="tanh"),
    "gelu_fast": partial(nn.GELU, approximate="tanh"),
    "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


def activation_factory(name: str) -> Callable[[], nn.Module]:
    """The zero-argument constructor for activation `name` (config.py validated the name against
    ACTIVATION_NAMES; tests/model/test_activations.py checks that every one of them is here)."""
    return _FACTORIES[name]
