"""GIT's image encoder: open_clip's CLIP `VisionTransformer`, all tokens out, and video frames.

GIT keeps every output token of the ViT (CLS included) after the final LayerNorm `ln_post`,
instead of CLIP's pooled and projected CLS. We reuse open_clip's modules (conv1, class and
position embeddings, ln_pre, its pre-LN residual blocks, ln_post) and write only the forward,
because GIT also needs position embeddings interpolated for other resolutions, exactly as
transformers' CLIP does with `interpolate_pos_encoding=True`.

open_clip is reached only through the parts `check_tower` lists, which every release from
2.26.1 to 3.3 has (pyproject.toml pins `>=2.26.1,<4`); a release that builds its ViT otherwise
is refused in one line instead of being half used.

Letters: B batch, F frames, D vision width, n tokens per frame (grid_h * grid_w + 1).
"""

from __future__ import annotations

from functools import partial
from importlib import metadata

import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import LayerNorm, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import VisionConfig
from .activations import activation_factory


class ImageEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, n_frames: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = VisionTransformer(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.d_model,
            layers=cfg.n_layer,
            heads=cfg.n_head,
            # open_clip sizes the MLP as int(width * ratio); the half makes that exactly d_ff.
            mlp_ratio=(cfg.d_ff + 0.5) / cfg.d_model,
            act_layer=activation_factory(cfg.act),
            norm_layer=partial(LayerNorm, eps=cfg.norm_eps),
        )
        check_tower(self.vit)
        # open_clip builds its attention without dropout; CLIP's (HF's attention_dropout) drops
        # attention probabilities in training. nn.MultiheadAttention and accel's SDPA version
        # both read `dropout` and apply it only while training.
        for block in self.vit.transformer.resblocks:
            block.attn.dropout = cfg.attn_dropout
        self.vit.proj = None  # CLIP's contrastive projection of the pooled token: GIT has none
        # One learned vector per frame, added to all of that frame's tokens (zeros at init, as in GIT).
        self.frame_embed = nn.Parameter(torch.zeros(n_frames, 1, cfg.d_model)) if n_frames else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) or video (B, F, 3, H, W) -> image tokens (B, F * n, D)."""
        if pixel_values.ndim == 4:
            return self.encode_frames(pixel_values)
        batch, frames = pixel_values.shape[:2]
        tokens = self.encode_frames(pixel_values.flatten(0, 1))  # (B*F, n, D): each frame alone
        tokens = rearrange(tokens, "(b f) n d -> b f n d", b=batch)
        tokens = tokens + self.frame_embed[:frames]  # (F, 1, D) broadcast over batch and tokens
        return rearrange(tokens, "b f n d -> b (f n) d")

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, n, D): every token after ln_post."""
        vit = self.vit
        x = vit.conv1(pixel_values.to(vit.conv1.weight.dtype))  # (B, D, grid_h, grid_w)
        grid_h, grid_w = x.shape[-2:]
        x = rearrange(x, "b d h w -> b (h w) d")
        cls = vit.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.position_embedding(grid_h, grid_w).to(x.dtype)  # (B, n, D)
        x = vit.ln_pre(x)
        for block in vit.transformer.resblocks:  # open_clip's pre-LN blocks, batch first; no mask
            if vit.transformer.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)  # recomputed in backward
            else:
                x = block(x)
        return vit.ln_post(x)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.vit.set_grad_checkpointing(enabled)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1 + grid_h * grid_w, D): the table, bicubically resized when the grid differs."""
        table = self.vit.positional_embedding  # (1 + g * g, D)
        g = self.cfg.grid
        if (grid_h, grid_w) == (g, g):
            return table
        cls_pos, patch_pos = table[:1], table[1:]
        patch_pos = rearrange(patch_pos, "(h w) d -> 1 d h w", h=g)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, rearrange(patch_pos, "1 d h w -> (h w) d")])


def sincos_table(grid: int, dim: int) -> torch.Tensor:
    """(1 + grid * grid, dim): a fixed 2-D sin-cos position table built as MAE builds its own, in
    the ViT's token order (CLS, then patches row by row), with a zero row for CLS. The first half
    of the channels encodes the patch's row and the second half its column, each as sin and cos
    at dim / 4 frequencies from 1 towards 1/10000, so nearby patches get similar vectors at every
    scale. (MAE puts the column first; for a table that starts training, the order is moot.)"""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    positions = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(positions, positions, indexing="ij")  # (grid, grid) each

    def encode(coordinate: torch.Tensor) -> torch.Tensor:  # (grid, grid) -> (grid * grid, dim / 2)
        angles = coordinate.flatten()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    patches = torch.cat([encode(rows), encode(cols)], dim=1)  # (grid * grid, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), patches]).float()


# What of open_clip's ViT git_scratch uses: the forward above, the weight init (git.py), the
# checkpoint key table (checkpoints/hub.py) and the fast kernels (accel/) name these parts.
TOWER_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "proj",
               "transformer.grad_checkpointing", "transformer.resblocks")
BLOCK_PARTS = ("ln_1", "ls_1", "ln_2", "ls_2", "mlp.c_fc", "mlp.c_proj", "attn.in_proj_weight",
               "attn.in_proj_bias", "attn.out_proj", "attn.batch_first")


def check_tower(vit: nn.Module) -> None:
    """Fail in one line, naming the first part that is missing, if open_clip built the ViT
    otherwise; its blocks must hold a batch-first nn.MultiheadAttention with fused in_proj."""
    missing = [name for name in TOWER_PARTS if not _has(vit, name)]
    for i, block in enumerate(getattr(getattr(vit, "transformer", None), "resblocks", ())):
        missing += [f"transformer.resblocks.{i}.{name}" for name in BLOCK_PARTS if not _has(block, name)]
        attn = getattr(block, "attn", None)
        if not (isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn.in_proj_weight is not None):
            missing.append(f"transformer.resblocks.{i}.attn as a batch-first nn.MultiheadAttention with in_proj_weight")
    if missing:
        raise ValueError(f"open_clip_torch {_installed('open_clip_torch')} builds its VisionTransformer "
                         f"without {missing[0]}, which git_scratch uses; install a release it is tested with: "
                         "pip install 'open_clip_torch>=2.26.1,<4'")


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # run from a source tree
        return "(version unknown)"


def _has(obj: object, dotted: str) -> bool:
    for name in dotted.split("."):
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True
