"""Another open_clip vision tower in front of GIT's decoder: CLIP's ModifiedResNet instead of the ViT.

The change (docs/extending.md, example 3): `GIT.vision` becomes `ResNetTower`, open_clip's
`ModifiedResNet` (the design of CLIP's RN50: a 3-conv stem, bottleneck stages with
anti-aliased striding, an attention pool on top), built offline with random weights. The
projection, the decoder and everything else stay; the data, the seed, the training config
and the steps are the shapes demo's, so the figures compare with `git-scratch demo`.

Tokens. GIT keeps every token of its ViT, not CLIP's pooled one; we do the same with the
ResNet's attention pool, whose queries are the mean of the last feature map and each of its
cells: it returns only the first output (the pooled vector), we keep all of them. At the
demo's 64 px the last stage is a 2 x 2 map, so the decoder reads 1 + 4 = 5 image tokens
(the ViT gives it 1 + 8 x 8 = 65), each of width `cfg.vision.d_model`, the width the
projection already reads. Width 32 and one bottleneck per stage: 73 M multiply-adds per image
against the ViT's 40 M (the decoder then reads 5 image tokens, not 65), and 5.3 M parameters
against the ViT's 0.6 M.

    python scripts/extend_tower.py [--steps N] [--out DIR] [--json]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from torch import nn

from git_scratch import GIT, GitConfig
from git_scratch.demo.recipe import run_variant


class ResNetTower(nn.Module):
    """pixel_values (B, 3, H, W) -> image tokens (B, 1 + h * w, D_out): the attention pool's
    outputs over the last feature map, (h, w) = (H, W) / 32."""

    def __init__(self, image_size: int, out_dim: int, width: int = 32, heads: int = 8) -> None:
        super().__init__()
        self.resnet = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=out_dim, heads=heads,
                                     image_size=image_size, width=width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.layer4(r.layer3(r.layer2(r.layer1(r.stem(pixel_values)))))  # (B, 32 width, h, w)
        return pool_tokens(r.attnpool, x)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Nothing to recompute block by block here (open_clip's own is a no-op too)."""


def pool_tokens(pool: AttentionPool2d, x: torch.Tensor) -> torch.Tensor:
    """open_clip's AttentionPool2d.forward, through SDPA, without its final `x[0]`: all
    1 + h * w outputs, (B, 1 + h w, D_out); the first is the pooled vector CLIP uses."""
    x = rearrange(x, "b c h w -> b (h w) c")
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pool.positional_embedding.to(x.dtype)  # (B, 1+hw, C)
    q, k, v = (rearrange(proj(x), "b n (h d) -> b h n d", h=pool.num_heads)
               for proj in (pool.q_proj, pool.k_proj, pool.v_proj))
    y = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1+hw, C/H)
    return pool.c_proj(rearrange(y, "b h n d -> b n (h d)"))


def customize(model: GIT) -> GIT:
    model.vision = ResNetTower(model.cfg.vision.image_size, out_dim=model.cfg.vision.d_model)
    return model


# The trained model's builder, named in its variant.json: `git-scratch caption runs/extend-tower/model IMAGE`
# imports it from this file, which it finds with PYTHONPATH=scripts (running the script puts scripts/ there).
BUILDER = "extend_tower:rebuild"


def rebuild(cfg: GitConfig) -> GIT:
    """A fresh GIT of `cfg` with customize's change: what loading a trained variant builds
    before its weights go in."""
    return customize(GIT.from_config(cfg))


def main(argv: list[str] | None = None) -> int:
    return run_variant("tower", "open_clip ModifiedResNet (CLIP RN50 design) as the vision tower, all its pool "
                       "outputs as tokens", customize, argv, BUILDER)


if __name__ == "__main__":
    sys.exit(main())
