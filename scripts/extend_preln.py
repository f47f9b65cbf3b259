"""Pre-LN decoder blocks, with a final LayerNorm before the LM head, instead of GIT's post-LN.

The change (docs/extending.md, example 2): `PreLNBlock` moves each LayerNorm from after the
residual sum to the input of its sublayer, as GPT-2 and the CLIP ViT do, and the model gets
a final LayerNorm in `GIT.final_norm`. Everything else, the data, the seed, the training
config and the steps, is the shapes demo's, so the figures compare with `git-scratch demo`.

Why the final LayerNorm. A post-LN block ends in a LayerNorm, so the LM head of GIT always
reads normalised vectors. A pre-LN block adds its sublayers' outputs to a residual stream that
nothing normalises: its scale grows with depth and differs from token to token. The head
(here tied to the word embeddings) would read that raw sum, its logits scaled by it; one
LayerNorm after the last block (GPT-2's ln_f) gives it normalised vectors again.

    python scripts/extend_preln.py [--steps N] [--out DIR] [--json]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from git_scratch import GIT, GitConfig
from git_scratch.demo.recipe import run_variant, same_weights
from git_scratch.model.decoder import DecoderBlock, KVCache


class PreLNBlock(DecoderBlock):
    """DecoderBlock's modules, in pre-LN order: `x = x + sublayer(norm(x))`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None = None,
                input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, cache, input_pos, positions))
        return x + self.drop(self.mlp(self.norm2(x)))

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # What attention reads is norm1(x) now, also for the image keys generation caches.
        return self.attn.keys_values(self.norm1(x))


def customize(model: GIT) -> GIT:
    model.blocks = nn.ModuleList(same_weights(PreLNBlock(model.cfg), block) for block in model.blocks)
    model.final_norm = nn.LayerNorm(model.cfg.d_model, eps=model.cfg.norm_eps)
    return model


# The trained model's builder, named in its variant.json: `git-scratch caption runs/extend-preln/model IMAGE`
# imports it from this file, which it finds with PYTHONPATH=scripts (running the script puts scripts/ there).
BUILDER = "extend_preln:rebuild"


def rebuild(cfg: GitConfig) -> GIT:
    """A fresh GIT of `cfg` with customize's change: what loading a trained variant builds
    before its weights go in."""
    return customize(GIT.from_config(cfg))


def main(argv: list[str] | None = None) -> int:
    return run_variant("preln", "pre-LN decoder blocks and a final LayerNorm", customize, argv, BUILDER)


if __name__ == "__main__":
    sys.exit(main())
