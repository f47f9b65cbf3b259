"""vision.py: open_clip's ViT used only through the parts check_tower names, and the sin-cos
position table that `VisionConfig.position_init` starts a from-scratch tower with."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import nn

from git_scratch import GIT
from git_scratch.model.vision import ImageEncoder, check_tower, sincos_table
from tests.conftest import tiny_config


def test_installed_open_clip_has_every_part_we_use() -> None:
    check_tower(ImageEncoder(tiny_config().vision).vit)  # raises one line if open_clip changed


@pytest.mark.parametrize(("break_it", "part"), [
    (lambda vit: delattr(vit, "ln_pre"), "without ln_pre"),
    (lambda vit: setattr(vit.transformer.resblocks[1], "attn", nn.Identity()),
     "without transformer.resblocks.1.attn.in_proj_weight"),
    (lambda vit: setattr(vit.transformer.resblocks[0].attn, "batch_first", False),
     "without transformer.resblocks.0.attn as a batch-first nn.MultiheadAttention"),
])
def test_an_open_clip_that_builds_its_vit_otherwise_is_refused_in_one_line(break_it, part: str) -> None:
    vit = ImageEncoder(tiny_config().vision).vit
    break_it(vit)
    with pytest.raises(ValueError, match=re.escape(part)) as error:
        check_tower(vit)
    assert "\n" not in str(error.value) and str(error.value).endswith("pip install 'open_clip_torch>=2.26.1,<4'")


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
