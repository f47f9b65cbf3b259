"""linear.py: the oneDNN path computes nn.Linear's product and steps aside where it must."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from git_scratch import linear as kernels
from git_scratch.linear import linear, linear_weights


@pytest.mark.parametrize("rows", [1, 3, 64, 65, 197])  # past FEW_ROWS: oneDNN only with AVX-512
def test_linear_equals_nn_linear(rows: int) -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 80), torch.randn(rows, 1, 48)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), layer(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(linear_weights(x[:, 0], layer.weight[40:], layer.bias[40:]),
                                   layer(x[:, 0])[:, 40:], rtol=0, atol=1e-6)  # a slice of a fused weight


def test_linear_takes_the_oneDNN_path_only_where_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = nn.Linear(8, 8), torch.randn(2, 8)
    many = torch.randn(kernels.FEW_ROWS + 1, 8)
    available = kernels.ONEDNN_LINEAR is not None and torch.backends.mkldnn.enabled
    with torch.no_grad():
        assert kernels.use_onednn(x, layer.weight) == available
        assert not kernels.use_onednn(x.double(), layer.weight.double())
        assert not kernels.use_onednn(x, layer.weight.t())  # a transposed view, not the (N, K) layout
        monkeypatch.setattr(kernels, "AVX512", False)
        assert not kernels.use_onednn(many, layer.weight)
        monkeypatch.setattr(kernels, "AVX512", True)
        assert kernels.use_onednn(many, layer.weight) == available
    assert kernels.use_onednn(x, layer.weight) == available  # with AVX-512, training too
    monkeypatch.setattr(kernels, "AVX512", False)
    assert not kernels.use_onednn(x, layer.weight)  # without: training keeps nn.Linear


@pytest.mark.skipif(kernels.ONEDNN_LINEAR is None, reason="torch built without oneDNN")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_grad", [True, False])  # the first layer's input needs no gradient
def test_onednn_training_gives_nn_linear_gradients(monkeypatch: pytest.MonkeyPatch, bias: bool, x_grad: bool) -> None:
    monkeypatch.setattr(kernels, "AVX512", True)  # the path is taken on AVX-512 CPUs; test it on any
    torch.manual_seed(0)
    layer = nn.Linear(48, 80, bias=bias)
    x = torch.randn(3, 5, 48, requires_grad=x_grad)
    grad_y = torch.randn(3, 5, 80)
    grads = []
    for forward in (layer, lambda x: linear(layer, x)):
        layer.zero_grad()
        x.grad = None
        y = forward(x)
        y.backward(grad_y)
        grads.append([y.detach(), layer.weight.grad, x.grad] + ([layer.bias.grad] if bias else []))
    assert type(linear(layer, x).grad_fn).__name__ == "OneDNNLinearBackward"  # not the MKL path twice
    for ours, reference in zip(*grads[::-1]):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_hooked_layers_are_called() -> None:
    layer, x = nn.Linear(8, 8), torch.randn(2, 8)
    seen = []
    layer.register_forward_hook(lambda *_: seen.append(True))
    with torch.no_grad():
        linear(layer, x)
    assert seen  # hooks (parity recording, attention capture) still fire


def test_subclasses_with_their_own_forward_are_called() -> None:
    class Doubled(nn.Linear):  # what LoRA and friends look like to linear()
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    layer, x = Doubled(8, 8), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), layer(x))
        attention = nn.MultiheadAttention(8, 2)  # out_proj: a subclass that keeps nn.Linear's forward
        assert type(attention.out_proj) is not nn.Linear
        torch.testing.assert_close(linear(attention.out_proj, x), attention.out_proj(x), rtol=0, atol=1e-6)


@pytest.mark.skipif(kernels.ONEDNN_LINEAR is None, reason="torch built without oneDNN")
@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap loops over oneDNN's rows
def test_torch_func_per_sample_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.func.grad and vmap(grad), the per-sample gradients researchers take, work through the
    oneDNN path and agree with nn.Linear's."""
    from torch.func import functional_call, grad, vmap

    monkeypatch.setattr(kernels, "AVX512", True)
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 4), torch.randn(5, 8)
    params = dict(layer.named_parameters())

    def through_linear(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return kernels.linear_weights(xi, p["weight"], p["bias"]).pow(2).sum()

    def through_nn(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, p, (xi,)).pow(2).sum()

    for transform in (grad, lambda f: vmap(grad(f), in_dims=(None, 0))):
        ours, reference = transform(through_linear)(params, x), transform(through_nn)(params, x)
        for name in params:
            torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=1e-5)
