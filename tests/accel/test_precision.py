"""accel's bf16 and int8 paths: the tokens of a trained tiny model equal fp32's, greedy and 3 beams,
its logits stay within a derived tolerance, and restore, state_dict, hooks and a second optimize
behave as with the fp32 kernels."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from git_scratch import GIT, accel, generate
from git_scratch.accel import precision
from git_scratch.accel.onednn import FastLinear
from git_scratch.accel.precision import DerivedWeight, Int8Linear, PackedLinear, PackedSelfAttention, quantize
from git_scratch.model.git import git_loss
from tests.conftest import tiny_config

SETTINGS = {"bf16": {"dtype": torch.bfloat16}, "int8": {"weights": "int8"},
            "bf16+int8": {"dtype": torch.bfloat16, "weights": "int8"}}
# A logit passes ~18 products (tower 2 x 4, projection, decoder 2 x 4, head), each rounding its input
# and its weight to bf16's 8 significant bits: relative error <= 2^-9 per rounding, 36 of them, of
# random sign, add up to ~sqrt(36) * 2^-9 = 1.2% of the logits' scale (measured: 1.1%). int8's
# weights are off by <= scale / 2 = row max / 254, ~2^-8 of a typical entry, on the 9 decoder
# products: the same order (measured: 1.5%). Three such standard deviations:
LOGIT_TOLERANCE = 3 * 36 ** 0.5 * 2 ** -9  # relative to the largest |logit|


@pytest.fixture(scope="module")
def trained() -> Iterator[tuple[GIT, torch.Tensor, torch.Tensor]]:
    """A tiny GIT that learned 8 random captions of 8 images (40 AdamW steps, < 1 s on one thread):
    decisive like a trained model, where a random one's near-ties would flip under any rounding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core machine ran these steps 100x slower
    try:
        torch.manual_seed(0)
        cfg = tiny_config()
        model = GIT(cfg)
        pixels = torch.randn(8, 3, 32, 32)
        captions = torch.randint(3, cfg.vocab_size, (8, 10))  # (B, T): bos, 8 words, eos
        captions[:, 0], captions[:, -1] = cfg.bos_id, cfg.eos_id
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(40):
            loss = git_loss(model(pixels, captions), captions)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        yield model.eval(), pixels, captions
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SETTINGS)
def test_tokens_equal_fp32_and_logits_stay_within_tolerance(trained: tuple, name: str) -> None:
    model, pixels, captions = trained
    reference = accel.optimize(copy.deepcopy(model))
    ours = accel.optimize(copy.deepcopy(model), **SETTINGS[name])
    greedy = generate(reference, pixels, max_new_tokens=9)
    assert len(set(greedy[:, 1:].flatten().tolist())) > 20  # varied tokens, not one word repeated
    assert torch.equal(generate(ours, pixels, max_new_tokens=9), greedy)
    beams = generate(reference, pixels, max_new_tokens=9, num_beams=3)
    assert torch.equal(generate(ours, pixels, max_new_tokens=9, num_beams=3), beams)
    with torch.no_grad():
        expected, logits = reference(pixels, captions).float(), ours(pixels, captions).float()
    assert (logits - expected).abs().max() <= LOGIT_TOLERANCE * expected.abs().max()
    assert not torch.equal(logits, expected)  # the reduced precision did run


def test_bf16_runs_on_prepacked_weights_where_the_cpu_multiplies_bf16() -> None:
    model = accel.optimize(GIT(tiny_config()).eval(), dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    classes = {type(m) for m in model.modules()}
    assert (PackedLinear in classes) == precision.BF16_PRODUCTS and (FastLinear in classes) != precision.BF16_PRODUCTS
    assert "bf16 products on prepacked" in accel.describe(model) or not precision.BF16_PRODUCTS


@pytest.mark.skipif(not precision.BF16_PRODUCTS, reason="the CPU has no native bf16 products")
@pytest.mark.parametrize("rows", [1, 3, 197])  # packed for one row; a prefill and a tower product too
def test_packed_product_equals_bf16_linear_and_follows_weight_changes(rows: int) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(48, 80).bfloat16()
    packed = accel.optimize(copy.deepcopy(layer), dtype=torch.bfloat16)
    assert type(packed) is PackedLinear
    x = torch.randn(rows, 48).bfloat16()
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x))  # bf16's own tolerance: the kernels round apart
        packed.load_state_dict({"weight": -layer.weight, "bias": layer.bias})
        torch.testing.assert_close(packed(x), nn.functional.linear(x, -layer.weight, layer.bias))
        with pytest.raises(ValueError, match="has shape \\(80, 47\\).*load a state_dict of the same model"):
            packed.load_state_dict({"weight": layer.weight[:, 1:], "bias": layer.bias})
        with pytest.raises(RuntimeError, match="Missing key.*\"weight\""):  # strict, as for a Parameter
            packed.load_state_dict({"bias": layer.bias})
        packed.load_state_dict({"bias": layer.bias}, strict=False)  # not strict: the weight stays
        torch.testing.assert_close(packed(x), nn.functional.linear(x, -layer.weight, layer.bias))


@pytest.mark.skipif(not precision.BF16_PRODUCTS, reason="the CPU has no native bf16 products")
def test_packed_weights_replace_the_plain_ones_and_read_back_exactly(trained: tuple) -> None:
    """The packed copy is the only one (so bf16 weighs half of fp32, not as much), `weight` and
    state_dict read it back bit for bit, and copies and pickles of the model decode alike."""
    model, pixels, _ = trained
    plain = copy.deepcopy(model).bfloat16()
    state = plain.state_dict()
    packed = accel.optimize(copy.deepcopy(model), dtype=torch.bfloat16)
    layers = [m for m in packed.modules() if type(m) in (PackedLinear, PackedSelfAttention)]
    linears = sum(isinstance(m, nn.Linear) for m in plain.modules())
    attentions = sum(isinstance(m, nn.MultiheadAttention) for m in plain.modules())
    assert len(layers) == linears + attentions
    stored = sum(p.numel() for p in packed.parameters()) + sum(m.weight.numel() for m in layers if type(m) is PackedLinear) \
        + sum(m.in_proj_weight.numel() for m in layers if type(m) is PackedSelfAttention)
    assert stored == sum(p.numel() for p in plain.parameters())  # each weight once: packed, or a Parameter
    assert all(torch.equal(v, state[k]) for k, v in packed.state_dict().items()) and packed.state_dict().keys() == state.keys()
    assert torch.equal(packed.blocks[0].attn.qkv.weight[3:], state["blocks.0.attn.qkv.weight"][3:])  # a slice reads the weight
    expected = generate(packed, pixels, max_new_tokens=6)
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(packed), torch.load(buffer, weights_only=False)):
        assert torch.equal(generate(other, pixels, max_new_tokens=6), expected)


@pytest.mark.skipif(not precision.BF16_PRODUCTS, reason="the CPU has no native bf16 products")
def test_packed_model_refuses_training_in_one_line_and_restore_trains_again(trained: tuple) -> None:
    model, pixels, captions = trained
    model = accel.optimize(copy.deepcopy(model), dtype=torch.bfloat16).train()
    with pytest.raises(ValueError, match="packed for inference.*accel.restore\\(model\\)"):
        model(pixels, captions)
    with torch.no_grad():
        model(pixels, captions)  # train mode without gradients (e.g. dropout sampling) still runs
    accel.restore(model)
    git_loss(model(pixels, captions), captions).backward()
    assert model.blocks[0].mlp.fc.weight.grad is not None


@pytest.mark.parametrize("name", SETTINGS)
def test_restore_gives_plain_classes_and_original_dtypes(name: str) -> None:
    torch.manual_seed(0)
    model = GIT(tiny_config()).eval()
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    params = list(model.parameters())  # held, so no new Parameter can reuse an old one's id
    accel.optimize(model, **SETTINGS[name])
    assert {k: v.dtype for k, v in model.state_dict().items()}.keys() == dtypes.keys()  # keys unchanged
    accel.restore(model)
    assert [type(m) for m in model.modules()] == classes
    assert {k: v.dtype for k, v in model.state_dict().items()} == dtypes
    assert not accel.is_optimized(model) and accel.describe(model).startswith("plain")
    # bf16 casts in place, but a packed layer's weight is new after restore, as int8's is
    kept = {id(p) for p in model.parameters()} & {id(p) for p in params}
    packed = sum(isinstance(m, (nn.Linear, nn.MultiheadAttention)) for m in model.modules()) if precision.BF16_PRODUCTS else 0
    replaced = {"bf16": packed, "int8": len(precision.int8_layers(model)),
                "bf16+int8": max(packed, len(precision.int8_layers(model)))}[name]
    assert len(kept) == len(params) - replaced


@pytest.mark.parametrize("name", SETTINGS)
def test_hooks_fire_and_optimize_twice_changes_nothing(trained: tuple, name: str) -> None:
    model, pixels, _ = trained
    model = accel.optimize(copy.deepcopy(model), **SETTINGS[name])
    seen = []
    layers = model.vision.vit.transformer.resblocks[0].mlp.c_fc, model.blocks[0].mlp.fc, model.lm_head
    for layer in layers:
        layer.register_forward_hook(lambda module, *_: seen.append(module))
    before = generate(model, pixels[:2], max_new_tokens=4)
    # the tower once; the decoder's fc over the image (prefix), the prompt (prefill) and 3 steps; the head 4 times
    assert [seen.count(layer) for layer in layers] == [1, 5, 4]
    state, line = {k: v.clone() for k, v in model.state_dict().items()}, accel.describe(model)
    accel.optimize(model, **SETTINGS[name])
    assert accel.describe(model) == line
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(generate(model, pixels[:2], max_new_tokens=4), before)


def test_int8_error_per_weight_is_at_most_half_a_scale() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]  # rows over four decades
    weight[3] = 0  # a row of zeros has no scale to divide by
    q, scale = quantize(weight)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and scale.shape == (64,)
    error = (weight - q.float() * scale.float()[:, None]).abs()
    assert bool((error <= scale.float()[:, None] / 2).all())
    # tight scales: rounding one up to bf16 costs at most 2^-8 of it, so every row still reaches 126 steps
    assert bool((q[torch.arange(64) != 3].abs().amax(1) >= 126).all()) and not q[3].any()


@pytest.mark.parametrize("rows", [1, precision.INT8_KERNEL_ROWS, precision.INT8_KERNEL_ROWS + 1, 197])
def test_int8_product_equals_the_dequantized_weights_product(rows: int) -> None:
    """Few rows through the int8 kernel, many through a bf16 product: both multiply by int8 * scale."""
    torch.manual_seed(0)
    holder = nn.Module()
    holder.blocks = nn.ModuleList([nn.Linear(48, 80)])
    precision.quantize_model(holder, accel.ORIGINAL_CLASS)
    layer, x = holder.blocks[0], torch.randn(rows, 48)
    assert type(layer) is Int8Linear
    with torch.no_grad():
        expected = nn.functional.linear(x.bfloat16().float(), layer.weight.dense(), layer.bias)
        # bf16 rounding of the output (and of int8 * scale past the kernel's rows): ~2^-9 each
        torch.testing.assert_close(layer(x), expected, rtol=2 ** -7, atol=2 ** -7)


def test_int8_layers_cover_the_decoder_and_state_dict_round_trips(trained: tuple) -> None:
    model, pixels, captions = trained
    model = accel.optimize(copy.deepcopy(model), weights="int8")
    int8 = [m for m in model.modules() if type(m) is Int8Linear]
    assert len(int8) == 4 * len(model.blocks) + 1  # qkv, out, fc, proj per block, and the LM head
    assert f"int8 weights in {len(int8)} decoder products" in accel.describe(model)
    assert all(type(m) is not Int8Linear for m in model.vision.modules())  # the tower keeps its path
    with torch.no_grad():
        logits = model(pixels, captions)
        state = model.state_dict()
        assert state["blocks.0.mlp.fc.weight"].dtype == torch.float32
        model.load_state_dict(state)  # its own float weights in: the same int8 weights
        assert torch.equal(model(pixels, captions), logits)
        fc = model.blocks[0].mlp.fc
        fc.load_state_dict({"weight": 2 * state["blocks.0.mlp.fc.weight"], "bias": state["blocks.0.mlp.fc.bias"]})
        doubled = 2 * state["blocks.0.mlp.fc.weight"]  # new scales: within half of one (the largest) of them
        torch.testing.assert_close(fc.weight, doubled, rtol=0, atol=float(fc.weight_scale.max()) / 2)


def test_int8_weight_reads_its_metadata_without_dequantizing(trained: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIT.new_caches reads the LM head's weight dtype and device on every generate call; dequantizing
    git-base's head for that took 81 ms. Operations on the weight do see int8 * scale."""
    model = accel.optimize(copy.deepcopy(trained[0]), weights="int8")
    head = model.lm_head
    assert type(head.weight) is DerivedWeight and head.weight.shape == (head.out_features, head.in_features)
    x = torch.randn(3, head.in_features)
    dense = head.weight.dense()
    torch.testing.assert_close(nn.functional.linear(x, head.weight[5:]), nn.functional.linear(x, dense[5:]),
                               rtol=0, atol=0)
    calls = []
    monkeypatch.setattr(DerivedWeight, "dense", lambda self: calls.append(self) or dense)
    caches = model.new_caches(2, 7)
    assert caches[0].k.dtype == torch.float32 and calls == []


def test_bad_settings_fail_in_one_line() -> None:
    model = GIT(tiny_config())
    with pytest.raises(ValueError, match="dtype=torch.float16.*torch.bfloat16"):
        accel.optimize(model, dtype=torch.float16)
    with pytest.raises(ValueError, match="weights='int4'.*'int8'"):
        accel.optimize(model, weights="int4")


@pytest.mark.skipif(not precision.BF16_PRODUCTS, reason="the CPU has no native bf16 products")
def test_loading_in_bf16_packs_the_products(trained: tuple, tmp_path) -> None:
    """git_scratch.load(dtype=torch.bfloat16) gives what accel.optimize(dtype=bf16) gives, packed."""
    from git_scratch import load, save

    model, pixels, _ = trained
    save(model, tmp_path / "model")
    loaded = load(tmp_path / "model", dtype=torch.bfloat16)
    assert any(type(m) is PackedLinear for m in loaded.modules())
    optimized = accel.optimize(copy.deepcopy(model), dtype=torch.bfloat16)
    assert torch.equal(generate(loaded, pixels, max_new_tokens=6), generate(optimized, pixels, max_new_tokens=6))


@pytest.mark.skipif(not precision.BF16_PRODUCTS, reason="the CPU has no native bf16 products")
def test_a_tied_lm_head_stays_tied_in_bf16_and_int8() -> None:
    """A head sharing the word embedding is neither packed (that would hold the weight twice and
    untie it) nor quantized (int8_layers leaves shared weights alone)."""
    model = GIT(tiny_config(tie_embeddings=True)).eval()
    accel.optimize(model, dtype=torch.bfloat16, weights="int8")
    assert model.lm_head.weight is model.embed.word.weight and type(model.lm_head) is FastLinear
    assert any(type(m) is PackedLinear for m in model.vision.modules())
