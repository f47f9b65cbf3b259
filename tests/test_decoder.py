"""decoder.linear: the few-row oneDNN path computes nn.Linear's product and steps aside when it must."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from git_scratch import decoder
from git_scratch.decoder import linear


@pytest.mark.parametrize("rows", [1, 3, 64, 65])  # 65: past FEW_ROWS, nn.Linear's own kernel
def test_linear_equals_nn_linear(rows: int) -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 80), torch.randn(rows, 1, 48)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), layer(x), rtol=0, atol=1e-6)


def test_linear_takes_the_oneDNN_path_only_where_measured() -> None:
    layer, x = nn.Linear(8, 8), torch.randn(2, 8)
    with torch.no_grad():
        assert decoder.use_onednn(layer, x) == (decoder.ONEDNN_LINEAR is not None and torch.backends.mkldnn.enabled)
        assert not decoder.use_onednn(layer, x.double())
        assert not decoder.use_onednn(layer, torch.randn(decoder.FEW_ROWS + 1, 8))
    assert not decoder.use_onednn(layer, x)  # autograd on: training keeps nn.Linear
    seen = []
    layer.register_forward_hook(lambda *_: seen.append(True))
    with torch.no_grad():
        assert not decoder.use_onednn(layer, x)
        linear(layer, x)
    assert seen  # hooks (parity recording, attention capture) still fire
