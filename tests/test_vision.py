"""vision.vit_block computes what open_clip's ResidualAttentionBlock computes, through SDPA; the
sin-cos position table that `VisionConfig.position_init` starts a from-scratch tower with."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from git_scratch import GIT
from git_scratch.activations import QuickGELU
from git_scratch.vision import sincos_table, vit_block
from tests.conftest import tiny_config


@pytest.mark.parametrize("ls_init_value", [None, 0.3])  # Identity, and LayerScale as other towers use it
@pytest.mark.parametrize("grad", [False, True])  # MultiheadAttention takes another path under autograd
def test_vit_block_equals_open_clip_block(ls_init_value: float | None, grad: bool) -> None:
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4, mlp_ratio=2.0, ls_init_value=ls_init_value, act_layer=QuickGELU).eval()
    if ls_init_value is not None:
        torch.nn.init.normal_(block.ls_1.gamma)  # not a constant, so a swapped ls_1/ls_2 shows
        torch.nn.init.normal_(block.ls_2.gamma)
    x = torch.randn(2, 5, 32)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(vit_block(block, x), block(x), rtol=0, atol=1e-5)


def test_sincos_table_codes_row_and_column_apart() -> None:
    grid, dim = 4, 16
    table = sincos_table(grid, dim)  # (1 + grid * grid, dim)
    assert table.shape == (1 + grid * grid, dim)
    assert not table[0].any()  # the class token has no place in the grid
    patches = table[1:].reshape(grid, grid, dim)  # (row, col, dim), the ViT's row-major order
    rows, cols = patches[..., : dim // 2], patches[..., dim // 2:]
    assert torch.equal(rows, rows[:, :1].expand_as(rows))  # first half: the same along a row
    assert torch.equal(cols, cols[:1].expand_as(cols))  # second half: the same down a column
    # Lowest channel of each half: sin(position * 1), then cos(position * 1) a quarter later.
    torch.testing.assert_close(rows[2, 0, 0], torch.tensor(2.0).sin())
    torch.testing.assert_close(cols[0, 3, dim // 4], torch.tensor(3.0).cos())
    assert len({tuple(row.tolist()) for row in table[1:]}) == grid * grid  # every patch its own vector


def test_position_init_scales_the_sincos_table() -> None:
    cfg = tiny_config()
    scaled = cfg.replace(vision=dataclasses.replace(cfg.vision, position_init=0.5))
    table = GIT.from_config(scaled).vision.vit.positional_embedding
    torch.testing.assert_close(table, 0.5 * sincos_table(cfg.vision.grid, cfg.vision.d_model), rtol=0, atol=0)
    torch.manual_seed(0)
    default = GIT.from_config(cfg).vision.vit.positional_embedding  # GIT's N(0, init_std)
    assert abs(default.std().item() - cfg.init_std) < 0.2 * cfg.init_std


@pytest.mark.parametrize(("vision", "message"), [
    ({"position_init": -1.0}, "vision.position_init = -1.0 must be a finite number >= 0"),
    ({"position_init": float("nan")}, "vision.position_init = nan must be a finite number >= 0"),
    ({"position_init": 1.0, "d_model": 34, "n_head": 2}, "needs vision.d_model divisible by 4 (got 34)"),
])
def test_bad_position_init_is_one_line(vision: dict, message: str) -> None:
    cfg = tiny_config()
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        cfg.replace(vision=dataclasses.replace(cfg.vision, **vision))
    assert "\n" not in str(error.value) and str(error.value).endswith("use 0 for GIT's random table")
