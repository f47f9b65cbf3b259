"""Builders for the variant-layout tests, importable as tests.checkpoints.variant_models, as a
researcher's own module would be: `build` makes a changed GIT, the others are wrong on purpose."""

from __future__ import annotations

import torch
from torch import nn

from git_scratch import GIT, GitConfig


class GatedGIT(GIT):
    """GIT with a learned per-channel gate on the image embeddings and a final LayerNorm: two
    tensors the official layout has no names for, and a method override that must survive loading."""

    def __init__(self, cfg: GitConfig) -> None:
        super().__init__(cfg)
        self.image_gate = nn.Parameter(torch.linspace(0.5, 1.5, cfg.d_model))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().encode_image(pixel_values) * self.image_gate  # (B, N, D)


def build(cfg: GitConfig) -> GIT:
    return GatedGIT(cfg)


def plain(cfg: GitConfig) -> GIT:
    """Unchanged GIT: the gated model's weights do not fit it."""
    return GIT(cfg)


def not_a_model(cfg: GitConfig) -> str:
    return "a string"
