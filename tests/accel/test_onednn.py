"""accel: the oneDNN path computes nn.Linear's product, the SDPA attention computes
nn.MultiheadAttention's, and `optimize` swaps them in only where it may and takes them out again."""

from __future__ import annotations

import copy

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from git_scratch import GIT, accel
from git_scratch.accel import onednn as kernels
from git_scratch.accel.onednn import FastLinear, SDPASelfAttention, linear_weights
from git_scratch.model.activations import QuickGELU
from tests.conftest import tiny_config


def fast(layer: nn.Module) -> nn.Module:
    return accel.optimize(copy.deepcopy(layer))


def always_onednn(width: int) -> dict[tuple[int, int], tuple[bool, ...]]:
    """A measurement that found oneDNN faster at every size, for products of this input width."""
    return {(torch.get_num_threads(), width): (True,) * len(kernels.ROW_RANGES)}


@pytest.mark.parametrize("rows", [1, 3, 64, 65, 197])  # past FEW_ROWS: oneDNN only with AVX-512
def test_fast_linear_equals_nn_linear(rows: int) -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 80), torch.randn(rows, 1, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(layer)(x), layer(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(linear_weights(x[:, 0], layer.weight[40:], layer.bias[40:]),
                                   layer(x[:, 0])[:, 40:], rtol=0, atol=1e-6)  # a slice of a fused weight


def test_linear_takes_the_oneDNN_path_by_the_rule_before_any_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "MEASURED", {})
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
    monkeypatch.setattr(kernels, "MEASURED", always_onednn(48))  # take the path whatever this CPU measures
    torch.manual_seed(0)
    layer = nn.Linear(48, 80, bias=bias)
    x = torch.randn(3, 5, 48, requires_grad=x_grad)
    grad_y = torch.randn(3, 5, 80)
    grads = []
    for forward in (layer, fast(layer)):
        forward.zero_grad()
        x.grad = None
        y = forward(x)
        y.backward(grad_y)
        grads.append([y.detach(), forward.weight.grad, x.grad] + ([forward.bias.grad] if bias else []))
    assert type(fast(layer)(x).grad_fn).__name__ == "OneDNNLinearBackward"  # not the MKL path twice
    for ours, reference in zip(*grads[::-1]):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_hooks_still_fire_on_swapped_layers() -> None:
    layer, x = nn.Linear(8, 8), torch.randn(2, 8)
    seen = []
    layer.register_forward_hook(lambda *_: seen.append(True))
    accel.optimize(layer)
    assert type(layer) is FastLinear
    with torch.no_grad():
        layer(x)
    assert seen  # hooks (parity recording, attention capture) still fire


def test_subclasses_with_their_own_forward_are_left_alone() -> None:
    class Doubled(nn.Linear):  # what LoRA and friends look like to optimize()
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    layer, x = Doubled(8, 8), torch.randn(2, 8)
    assert type(accel.optimize(layer)) is Doubled
    attention = nn.MultiheadAttention(8, 2, batch_first=True)  # out_proj: a subclass that keeps nn.Linear's forward
    original = type(attention.out_proj)
    assert original is not nn.Linear
    with torch.no_grad():
        reference = attention.out_proj(x)
        accel.optimize(attention)
        assert type(attention.out_proj) is FastLinear and type(attention) is SDPASelfAttention
        torch.testing.assert_close(attention.out_proj(x), reference, rtol=0, atol=1e-6)
    accel.restore(attention)
    assert type(attention.out_proj) is original and type(attention) is nn.MultiheadAttention


@pytest.mark.parametrize("ls_init_value", [None, 0.3])  # Identity, and LayerScale as other towers use it
@pytest.mark.parametrize("grad", [False, True])  # MultiheadAttention takes another path under autograd
def test_sdpa_attention_equals_open_clip_block(ls_init_value: float | None, grad: bool) -> None:
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4, mlp_ratio=2.0, ls_init_value=ls_init_value, act_layer=QuickGELU).eval()
    if ls_init_value is not None:
        torch.nn.init.normal_(block.ls_1.gamma)  # not a constant, so a swapped ls_1/ls_2 shows
        torch.nn.init.normal_(block.ls_2.gamma)
    x = torch.randn(2, 5, 32)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(fast(block)(x), block(x), rtol=0, atol=1e-5)


def test_sdpa_attention_hands_other_calls_to_the_original() -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, -2:] = True  # nn.MultiheadAttention's True: may NOT attend
    with torch.no_grad():
        reference = attention(q, kv, kv, attn_mask=mask)
        accel.optimize(attention)
        ours = attention(q, kv, kv, attn_mask=mask)  # cross-attention with a mask and weights
    torch.testing.assert_close(ours[0], reference[0])
    torch.testing.assert_close(ours[1], reference[1])


def test_optimize_keeps_identity_state_and_parameters_and_restore_undoes_it() -> None:
    torch.manual_seed(0)
    model = GIT(tiny_config()).eval()
    fc, before = model.blocks[0].mlp.fc, {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    accel.optimize(model)
    assert accel.is_optimized(model) and type(fc) is FastLinear and model.blocks[0].mlp.fc is fc
    assert [id(p) for p in model.parameters()] == params  # an optimizer made before still holds them
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and set(before) == set(model.state_dict())
    accel.optimize(model)  # twice changes nothing
    accel.restore(model)
    assert not accel.is_optimized(model) and type(fc) is nn.Linear
    assert {type(m) for m in model.modules()}.isdisjoint({FastLinear, SDPASelfAttention})


@pytest.mark.skipif(kernels.ONEDNN_LINEAR is None, reason="torch built without oneDNN")
@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap loops over oneDNN's rows
def test_torch_func_per_sample_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.func.grad and vmap(grad), the per-sample gradients researchers take, work through the
    oneDNN path and agree with nn.Linear's."""
    from torch.func import functional_call, grad, vmap

    monkeypatch.setattr(kernels, "MEASURED", always_onednn(8))
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


@pytest.mark.parametrize("optimized", [False, True])
def test_hooks_on_every_mlp_fire(optimized: bool) -> None:
    """The model calls its layers as layer(x): a hook on the tower's or the decoder's MLP sees
    every call, with accel's kernels and without (the tower's did not when a kernel switch ran
    the MLP's parts inside the model's code)."""
    model = GIT(tiny_config()).eval()
    if optimized:
        accel.optimize(model)
    mlps = [*(block.mlp for block in model.vision.vit.transformer.resblocks), *(block.mlp for block in model.blocks)]
    seen = []
    for mlp in mlps:
        mlp.register_forward_hook(lambda module, *_: seen.append(module))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32), torch.tensor([[1, 5, 6]]))
    assert seen == mlps


def test_cpu_autocast_runs_the_product_in_its_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CPU autocast the product is F.linear's, which autocast casts to bf16 (oneDNN's op would
    run fp32 silently): a bf16 result, equal to nn.Linear's under the same autocast."""
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 80), torch.randn(3, 48)
    optimized = fast(layer)
    monkeypatch.setattr(kernels, "MEASURED", always_onednn(48))  # oneDNN outside autocast, whatever was measured
    for grad in (False, True):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
            ours, reference = optimized(x), layer(x)
        assert ours.dtype == reference.dtype == torch.bfloat16
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert kernels.use_onednn(x, layer.weight) == (kernels.ONEDNN_LINEAR is not None and torch.backends.mkldnn.enabled)


def test_each_product_takes_the_kernel_measured_for_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels.ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled:
        pytest.skip("torch built without oneDNN")
    assert [kernels.row_range(rows) for rows in (1, 3, 4, 8, 9, 64, 65, 512, 513, 5000)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    threads = torch.get_num_threads()
    monkeypatch.setattr(kernels, "MEASURED", {(threads, 8): (False, True, False, True, False)})
    weight = torch.randn(4, 8)
    with torch.no_grad():
        chosen = [kernels.use_onednn(torch.randn(rows, 8), weight) for rows in (1, 3, 4, 9, 65, 513)]
        assert chosen == [False, False, True, False, True, False]
        assert kernels.use_onednn(torch.randn(2, 3, 8), weight)  # rows counted over the leading dims: 6
        monkeypatch.setattr(kernels, "AVX512", True)
        assert kernels.use_onednn(torch.randn(1, 16), torch.randn(4, 16))  # another width: the rule
    assert kernels.describe_choice(8) == ("MKL at 1-3 rows, oneDNN at 4-8 rows, MKL at 9-64 rows, "
                                          "oneDNN at 65-512 rows, MKL from 513 rows (measured)")
    monkeypatch.setattr(kernels, "MEASURED", {(threads, 8): (False,) * len(kernels.ROW_RANGES)})
    assert kernels.describe_choice(8) == "MKL at every size (measured)"


def test_optimize_measures_the_kernels_once_on_the_model_and_describe_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels.ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled:
        pytest.skip("torch built without oneDNN")
    monkeypatch.setattr(kernels, "MEASURED", {})
    cfg = tiny_config()
    model = accel.optimize(GIT(cfg).eval())
    widths = {cfg.d_model, cfg.d_ff}  # the decoder's products' input widths
    assert {k for t, k in kernels.MEASURED if t == torch.get_num_threads()} == widths
    assert all(len(flags) == len(kernels.ROW_RANGES) for flags in kernels.MEASURED.values())
    assert accel.describe(model).startswith("float32 products: ") and "(measured)" in accel.describe(model)
    timed = []
    monkeypatch.setattr(kernels.time, "perf_counter", lambda: timed.append(1) or 0.0)
    accel.optimize(GIT(cfg).eval())  # a second model of the same widths: nothing timed again
    assert not timed
