"""vision.vit_block computes what open_clip's ResidualAttentionBlock computes, through SDPA."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from git_scratch.activations import QuickGELU
from git_scratch.vision import vit_block


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
