"""Reduced precision, applied to a built model from outside: bf16 products on oneDNN with weights
prepacked once, and weight-only int8 for the decoder's products. `accel.optimize(model,
dtype=torch.bfloat16, weights="int8")` calls these; `accel.restore` undoes them.

bf16. Every floating parameter and buffer is cast in place (the Parameter objects stay). On a
CPU with native bf16 products (AVX512-BF16 or AMX, `torch.ops.mkldnn._is_mkldnn_bf16_supported`)
each `FastLinear` becomes a `PackedLinear`, and the tower's `SDPASelfAttention` a
`PackedSelfAttention` (its fused in_proj): the weight is reordered once into oneDNN's blocked
layout (`_reorder_linear_weight`) instead of on every call, and that packed copy is the only
one, so bf16 weighs half of fp32 (`pack_model`). A git-base decode step's 25 products took
6.7 ms packed against 13.6 ms with `F.linear` in bf16 and 15.7 ms in fp32 (AMD EPYC, 1 thread,
CPU time); on the Xeon with AMX 5.3-5.5 ms (2 threads), about its read bandwidth
(docs/performance.md). `weight` still reads as a bf16 (N, K) tensor (`DerivedWeight`: the
packed copy read back, exactly), `state_dict` keeps its keys and values, and a deep copy or
pickle packs again. Packed, the model is for inference: it has no weight Parameters to train,
so a forward in train mode with gradients is refused in one line (`accel.restore` gives plain
bf16 layers back; bf16 training is autocast over fp32 weights, training/precision.py).
torch.compile and CUDA take `F.linear` in bf16 on plain weights.

int8 (weight-only). Each decoder product (every block's qkv, out, fc and proj, and the LM head:
`INT8_LM_HEAD`) stores its weight as int8 with one symmetric scale per output channel, and
multiplies through `torch.ops.aten._weight_int8pack_mm` with bf16 activations: torch's own
kernel, kept with torch, no extra dependency. Not torchao: its int8 dynamic quantisation with
torch.compile produced wrong tokens in an earlier measurement (docs/performance.md), and its API
moved between releases. A decode step reads the weights once and little else, so halving their
bytes against bf16 is what makes it faster: 5.7 ms against 6.7 ms packed bf16 for the same 25
products (same measurement). The kernel's time grows with the rows, one weight pass per row:
at 1 row it beat packed bf16 (0.076 against 0.103 ms for 768 -> 3072), from 3 rows it lost, and
over the image prefix's 197 rows it took 6.5 ms against 2.2 ms: many rows take a bf16 product on
the weight dequantized for the call instead (`INT8_KERNEL_ROWS`). With fp32 activations it ran
10x slower, so an fp32 model's int8 products cast their input to bf16 and their output back.
Inference only: the int8 weight has no gradient. The tower and the image projection keep
`dtype`'s path.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

from .onednn import FastLinear, ONEDNN_LINEAR, SDPASelfAttention

BF16_PRODUCTS = ONEDNN_LINEAR is not None and torch.ops.mkldnn._is_mkldnn_bf16_supported()
# Up to this many rows int8 products run `_weight_int8pack_mm`, one weight pass per row; beyond it
# (the prefix's 197 image tokens) the weight is dequantized to bf16 for one product: for 768 -> 3072,
# 16 / 64 / 197 rows took 0.54 / 2.15 / 6.55 ms through the kernel, 1.08 / 1.61 / 3.14 ms so.
INT8_KERNEL_ROWS = 32
INT8_LM_HEAD = True  # a trained tiny model's tokens with it equal fp32's (tests/accel/test_precision.py)
PACKED = "_accel_packed"  # module.__dict__: its Packed weight
ORIGINAL_DTYPES = "_accel_original_dtypes"  # model.__dict__: name -> dtype of every parameter and buffer
INT8_DTYPE = "_accel_int8_dtype"  # module.__dict__: the dtype `weight` reads back in


# --- bf16 -------------------------------------------------------------------------------------


def record_dtypes(model: nn.Module) -> None:
    """Keep the dtype every parameter and buffer had before the first change, for `restore_dtypes`."""
    if ORIGINAL_DTYPES not in model.__dict__:
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        object.__setattr__(model, ORIGINAL_DTYPES, {name: t.dtype for name, t in tensors.items()})


def to_dtype(model: nn.Module, dtype: torch.dtype, *, pack: bool = True) -> None:
    """Cast floating parameters and buffers in place; with bf16 on a CPU that multiplies bf16
    natively, and `pack`, give the products their prepacked weights (`pack_model`)."""
    record_dtypes(model)
    if dtype != torch.bfloat16 or not pack:
        unpack_model(model)
    model.to(dtype)
    for module in model.modules():
        if type(module) is Int8Linear:
            module.__dict__[INT8_DTYPE] = dtype  # `weight` reads back in the model's dtype
    if dtype == torch.bfloat16 and pack and BF16_PRODUCTS:
        pack_model(model)


def restore_dtypes(model: nn.Module) -> None:
    """Every parameter and buffer back in the dtype it had, in place, one tensor at a time."""
    original = model.__dict__.pop(ORIGINAL_DTYPES, None)
    if original is None:
        return
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in tensors.items():
        if name in original and tensor.dtype != original[name]:
            tensor.data = tensor.data.to(original[name])


def tower_rows(model: nn.Module) -> int:
    """The tokens one image gives the vision tower (patches and the class token), else 1."""
    vision = getattr(getattr(model, "cfg", None), "vision", None)
    return 1 if vision is None else vision.n_tokens


def pack_model(model: nn.Module) -> None:
    """Every bf16 CPU `FastLinear` becomes a `PackedLinear` and every `SDPASelfAttention` a
    `PackedSelfAttention`: the weight is reordered once into oneDNN's layout and the plain
    Parameter is dropped. The layout is chosen for a row count: the tower's products always see
    its tokens, the decoder's mostly one decode step's row. On the Xeon with AMX, git-base's 197-row
    products (one block's four and the LM head, 2 threads) took 6.1 ms packed for 197 rows, 7.9 ms
    packed for 1 row and 9.2 ms plain; any row count runs on either layout (tests/accel)."""
    tower = {id(m) for m in getattr(model, "vision", nn.Module()).modules()}
    holders = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    for module in model.modules():
        packed = PACKED_CLASSES.get(type(module))
        name = PACKED_NAMES.get(packed)
        if packed is None or module._parameters.get(name) is None or module._parameters[name].device.type != "cpu":
            continue
        if holders[id(module._parameters[name])] > 1:  # tied (an LM head sharing the word embedding): a
            continue  # packed copy would hold the weight twice, and untie it
        weight = module._parameters.pop(name).detach()
        module.__class__ = packed
        module.__dict__[PACKED] = Packed(weight, tower_rows(model) if id(module) in tower else 1)


def unpack_model(model: nn.Module) -> None:
    """Packed modules back to their unpacked class, with a plain Parameter equal to the packed weight."""
    for module in model.modules():
        if type(module) in PACKED_NAMES:
            weight = module.__dict__.pop(PACKED).dense()
            name = PACKED_NAMES[type(module)]
            module.__class__ = next(plain for plain, packed in PACKED_CLASSES.items() if packed is type(module))
            module.register_parameter(name, nn.Parameter(weight))


class Packed:
    """A bf16 weight (N, K) in oneDNN's blocked layout, laid out for `rows` rows: an opaque mkldnn
    tensor, which has no storage to copy or pickle, so a deep copy or torch.save of the model goes
    through the plain weight and packs it again."""

    def __init__(self, weight: torch.Tensor, rows: int) -> None:
        self.rows = rows
        self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16).contiguous(), rows)

    def dense(self) -> torch.Tensor:
        return self.tensor.to_dense()  # exactly the weight packed: the reorder moves values, rounds none

    def __reduce__(self) -> tuple:
        return Packed, (self.dense(), self.rows)


def repack(module: nn.Module, weight: torch.Tensor) -> None:
    """A packed module takes a new weight (load_state_dict), packed in its layout."""
    module.__dict__[PACKED] = Packed(weight, module.__dict__[PACKED].rows)


def packed_read(module: nn.Module) -> DerivedWeight:
    """The packed weight as code outside reads it: shape, dtype and device for free, the plain
    bf16 weight when an operation uses it."""
    packed = module.__dict__[PACKED]
    return DerivedWeight(packed.tensor.shape, torch.bfloat16, torch.device("cpu"), packed.dense)


def packed_product(module: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) times the module's packed weight, (..., N): oneDNN on the packed layout, or, where
    that does not apply (an input of another dtype, autocast, oneDNN off, torch.compile, an input
    that needs its gradient), F.linear on the plain weight read back."""
    if module.training and torch.is_grad_enabled():
        raise ValueError(f"{type(module).__name__}: this bf16 model's weights are packed for inference (accel.optimize"
                         "(dtype=torch.bfloat16)) and have no gradient; call accel.restore(model) "
                         "before training, or train in bf16 with TrainConfig(precision='bf16')")
    plain = x.dtype != torch.bfloat16 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu") \
        or not torch.backends.mkldnn.enabled or torch.compiler.is_compiling() \
        or (torch.is_grad_enabled() and x.requires_grad)
    if plain:
        return F.linear(x, packed_read(module).dense().to(x.dtype), None if bias is None else bias.to(x.dtype))
    return ONEDNN_LINEAR(x, module.__dict__[PACKED].tensor, bias, "none", [], "")


class PackedState:
    """state_dict for a packed module: its weight saved under its usual key, read back from the
    packed copy, and loaded by packing the given one (`load_packed`)."""

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + PACKED_NAMES[type(self)]] = packed_read(self).dense()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        load_packed(self, state_dict, prefix, *args)
        super()._load_from_state_dict(state_dict, prefix, *args)


class PackedLinear(PackedState, FastLinear):
    """nn.Linear in bf16 whose weight is held only in oneDNN's blocked layout, for inference:
    `weight` reads the plain weight back (exactly), and `state_dict` holds it under its usual key."""

    @property
    def weight(self) -> torch.Tensor:
        return packed_read(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_product(self, x, self.bias)


class PackedSelfAttention(PackedState, SDPASelfAttention):
    """The tower's attention in bf16 with its fused query/key/value projection (a ViT block's
    largest product: 2304 of its 9984 output columns) held packed, as PackedLinear's weight."""

    @property
    def in_proj_weight(self) -> torch.Tensor:
        return packed_read(self)

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        return packed_product(self, x, self.in_proj_bias)


def load_packed(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                missing_keys: list[str], *_: object) -> None:
    """nn.Module._load_from_state_dict's part for the packed weight, which is no Parameter: taken
    out of `state_dict` (load_state_dict hands each module a copy) and packed in its layout."""
    key = prefix + PACKED_NAMES[type(module)]
    weight = state_dict.pop(key, None)
    if weight is None:
        if strict:
            missing_keys.append(key)
        return
    current = module.__dict__[PACKED].tensor
    if weight.shape != current.shape:
        raise ValueError(f"load_state_dict: {key} has shape {tuple(weight.shape)} but this packed layer's "
                         f"weight is {tuple(current.shape)}; load a state_dict of the same model")
    repack(module, weight)


PACKED_CLASSES: dict[type[nn.Module], type[nn.Module]] = {FastLinear: PackedLinear, SDPASelfAttention: PackedSelfAttention}
PACKED_NAMES: dict[type[nn.Module], str] = {PackedLinear: "weight", PackedSelfAttention: "in_proj_weight"}


# --- int8 weight-only ---------------------------------------------------------------------------


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) -> int8 (N, K), scale (N,) bf16 with weight ~ int8 * scale[:, None], every
    entry within scale / 2. The scale is rounded up to bf16 (the kernel's dtype), so no entry
    needs more than 127 steps and none is clamped."""
    w = weight.detach().float()  # (N, K)
    needed = w.abs().amax(1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # (N,)
    scale = needed.to(torch.bfloat16)
    scale = torch.where(scale.float() < needed, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_layers(model: nn.Module) -> list[nn.Linear]:
    """The decoder's products: nn.Linear layers (with nn.Linear's own forward) inside `model.blocks`,
    and the LM head unless its weight is shared (tied embeddings) or `INT8_LM_HEAD` is off."""
    layers = [m for block in getattr(model, "blocks", ()) for m in block.modules() if plain_linear(m)]
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "embed", None), "word", None)
    if INT8_LM_HEAD and plain_linear(head) and not (embed is not None and head.weight is embed.weight):
        layers.append(head)
    return layers


def plain_linear(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward in (nn.Linear.forward, FastLinear.forward,
                                                                     PackedLinear.forward)


def quantize_model(model: nn.Module, original_class: str) -> int:
    """Give the decoder's products int8 weights, in place; returns how many. `original_class` is
    where accel keeps the class to restore."""
    record_dtypes(model)
    layers = int8_layers(model)
    for layer in layers:
        if type(layer) is PackedLinear:
            unpack_model(layer)
        q, scale = quantize(layer.weight)
        dtype = layer.weight.dtype
        if original_class not in layer.__dict__:
            object.__setattr__(layer, original_class, type(layer))
        del layer._parameters["weight"]
        layer.__class__ = Int8Linear
        layer.register_buffer("weight_int8", q, persistent=False)
        layer.register_buffer("weight_scale", scale, persistent=False)
        layer.__dict__[INT8_DTYPE] = dtype
    return len(layers)


def dequantize_model(model: nn.Module, original_class: str) -> None:
    """Int8 layers back to their class with a float weight Parameter (int8 * scale: the rounding stays)."""
    for layer in model.modules():
        if isinstance(layer, Int8Linear):
            weight = layer.weight.dense()
            del layer._buffers["weight_int8"], layer._buffers["weight_scale"]
            layer.__dict__.pop(INT8_DTYPE)
            layer.__class__ = layer.__dict__[original_class]
            layer.weight = nn.Parameter(weight)


class DerivedWeight(torch.Tensor):
    """A weight (N, K) held in another form (int8 and scales, oneDNN's packed layout), as read from
    outside: its dtype, device and shape cost nothing (`GIT.new_caches` reads the LM head's on every
    call: dequantizing git-base's head took 81 ms), and any operation on it (`Attention.keys_values`
    slices and multiplies) runs on the plain weight `dense()` computes."""

    @staticmethod
    def __new__(cls, shape: torch.Size, dtype: torch.dtype, device: torch.device,
                dense: Callable[[], torch.Tensor]) -> DerivedWeight:
        return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device=device)

    def __init__(self, shape: torch.Size, dtype: torch.dtype, device: torch.device,
                 dense: Callable[[], torch.Tensor]) -> None:
        self.compute = dense

    def dense(self) -> torch.Tensor:
        return self.compute()  # (N, K)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 (torch's protocol)
        def dense(t: object) -> object:
            return t.dense() if isinstance(t, DerivedWeight) else t

        return func(*tree_map(dense, args), **tree_map(dense, kwargs or {}))

    def __repr__(self) -> str:
        return f"DerivedWeight({self.dense()!r})"


class Int8Linear(nn.Linear):
    """nn.Linear with an int8 weight (N, K) and one bf16 scale per output channel. `weight` reads
    the dequantized weight (N, K) in the layer's dtype, for the code that multiplies by it directly
    (`Attention.keys_values`) and for `state_dict`, which keeps its keys and float values."""

    @property
    def weight(self) -> torch.Tensor:
        q, scale, dtype = self.weight_int8, self.weight_scale, self.__dict__[INT8_DTYPE]
        return DerivedWeight(q.shape, dtype, q.device, lambda: (q.float() * scale.float()[:, None]).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()  # (M, K)
        scale = self.weight_scale.to(torch.bfloat16)  # (N,)
        if rows.shape[0] <= INT8_KERNEL_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, scale)  # (M, N)
        else:  # the image prefix: one bf16 product on the weight dequantized for this call
            y = F.linear(rows, self.weight_int8.to(torch.bfloat16) * scale[:, None])
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight.dense()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        weight = state_dict.pop(prefix + "weight", None)  # a float weight, as state_dict gives it
        # the layer's own dequantized weight changes nothing (quantizing it anew would pick other
        # scales: its rows' largest entries are rarely 127 steps); any other is quantized
        if weight is not None:
            current = self.weight.dense()
            if not torch.equal(weight.to(current.device, current.dtype), current):
                self.weight_int8, self.weight_scale = quantize(weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
