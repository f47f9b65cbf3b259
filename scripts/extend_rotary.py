"""Rotary position embeddings in GIT's decoder instead of its absolute position table.

The change (docs/extending.md, example 1): `RotaryAttention` rotates queries and keys by their
text positions (RoFormer, Su et al. 2021), and `TextEmbedding` loses its position table.
Everything else, the data, the seed, the training config and the steps, is the shapes demo's,
so the figures compare with `git-scratch demo`.

Positions. The model hands every block `positions` (B, S): the text position of each token,
counting real tokens only (left padding does not shift it, packed texts restart at 0), and 0
for every image token. Image tokens therefore all sit at one place, before the text:
  - rotating by 0 is the identity, so image rows are exactly what they were: image tokens
    attend to each other by content alone, their 2-D layout being the ViT's business;
  - their keys depend on the image alone, as GIT's cache needs: generation computes them once
    per image (generate.encode_prefix) and shares them across prompts of any length;
  - a text token at position p sees every image key from the same distance p.

    python scripts/extend_rotary.py [--steps N] [--out DIR] [--json]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from git_scratch import GIT, GitConfig
from git_scratch.demo.recipe import run_variant, same_weights
from git_scratch.model.decoder import Attention


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotate feature pairs (i, i + Dh/2) of x (B, H, S, Dh) by the angles positions (B, S) *
    base^(-2i/Dh): RoFormer's eq. 34, with GPT-NeoX's pairing of the two halves."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # at least fp32, also under bf16
    half = x.shape[-1] // 2
    inv_freq = base ** -(torch.arange(half, device=x.device, dtype=dtype) / half)  # (Dh/2,)
    angles = positions[:, None, :, None].to(dtype) * inv_freq  # (B, 1, S, Dh/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(dtype).chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class RotaryAttention(Attention):
    """decoder.Attention with queries and keys rotated by their positions. Keys enter the cache
    rotated, so cached decoding needs nothing else."""

    def heads(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().heads(x, positions)  # (B, H, S, Dh) each
        return rotate(q, positions), rotate(k, positions), v

    # keys_values (the image keys of the last layer, generate.encode_prefix) stays as it is:
    # image tokens sit at position 0, where the rotation is the identity.


class NoPositionTable(nn.Module):
    """Stands where TextEmbedding's absolute position table was: it adds nothing."""

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=positions.device)


def customize(model: GIT) -> GIT:
    model.embed.position = NoPositionTable()
    for block in model.blocks:
        block.attn = same_weights(RotaryAttention(model.cfg), block.attn)
    return model


# The trained model's builder, named in its variant.json: `git-scratch caption runs/extend-rotary/model IMAGE`
# imports it from this file, which it finds with PYTHONPATH=scripts (running the script puts scripts/ there).
BUILDER = "extend_rotary:rebuild"


def rebuild(cfg: GitConfig) -> GIT:
    """A fresh GIT of `cfg` with customize's change: what loading a trained variant builds
    before its weights go in."""
    return customize(GIT.from_config(cfg))


def main(argv: list[str] | None = None) -> int:
    return run_variant("rotary", "rotary positions in the decoder's attention, no absolute position table",
                       customize, argv, BUILDER)


if __name__ == "__main__":
    sys.exit(main())
