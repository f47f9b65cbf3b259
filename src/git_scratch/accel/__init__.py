"""Kernel choices, applied to a built model from outside: the model's code never calls them.

    model = accel.optimize(model)   # the kernels measured faster on this machine, in place
    accel.restore(model)            # plain PyTorch layers again

For fp32 products it first measures which of MKL and oneDNN is faster on this machine for
each range of rows, on products of the model's own shapes (onednn.py: 0.7 s on git-base, once
per process). `optimize` changes the class of eligible modules to a subclass whose `forward`
picks the kernel (onednn.py): each module keeps its identity, parameters, buffers and hooks, so an optimizer, a
DDP wrapper or a hook made before or after still sees the same objects, and `state_dict` is
unchanged. Eligible means a layer that still runs its base class's own forward: a LoRA layer or
any subclass with a forward of its own is left alone. Outputs differ from the plain model's by
float rounding only (tests/accel, and tests/parity runs both ways).

`git_scratch.load` and `train` apply it; `GIT(cfg)` builds plain layers.

Beyond the kernels, on request (each measured and checked for tokens in docs/performance.md):

    accel.optimize(model, dtype=torch.bfloat16)     # bf16, prepacked oneDNN products (precision.py)
    accel.optimize(model, weights="int8")           # int8 weights in the decoder's products
    accel.optimize(model, compile=True)             # torch.compile of tower and blocks (compiled.py)
    accel.describe(model)                           # one line: what is applied
"""

from __future__ import annotations

import torch
from torch import nn

from . import compiled, onednn, precision
from .onednn import FastLinear, SDPASelfAttention

# base class -> the class `optimize` gives its plain instances
FAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: FastLinear,
    nn.MultiheadAttention: SDPASelfAttention,
}
ORIGINAL_CLASS = "_accel_original_class"  # where a swapped module keeps the class it had


SETTINGS = "_accel_settings"  # model.__dict__: what optimize applied beyond the kernels, for describe
DTYPES = (None, torch.float32, torch.bfloat16)
WEIGHTS = (None, "int8")


def optimize(model: nn.Module, *, dtype: torch.dtype | None = None, weights: str | None = None,
             compile: bool = False) -> nn.Module:
    """Swap in the fast kernels, in place, and return `model`. Calling it twice changes nothing.

    dtype: None keeps the model's; torch.bfloat16 casts it and, on a CPU with native bf16 products,
        runs inference products on oneDNN with prepacked weights (precision.py); decode_step still
        hands sampling fp32 logits. torch.float32 casts back to fp32.
    weights: "int8" stores the decoder's product weights (and the LM head's) as int8 with one scale
        per output channel, multiplied with bf16 activations (precision.py); inference only.
    compile: torch.compile of the vision tower and each decoder block (compiled.py); where it cannot
        run, one warning and the model stays uncompiled. Hooks inside a part make it run eagerly.
    """
    if dtype not in DTYPES:
        raise ValueError(f"accel.optimize got dtype={dtype}; pass torch.bfloat16 or torch.float32 "
                         "(None keeps the model's)")
    if weights not in WEIGHTS:
        raise ValueError(f"accel.optimize got weights={weights!r}; pass 'int8' (None keeps float weights)")
    for module in model.modules():
        for base, fast in FAST_CLASSES.items():
            if isinstance(module, base) and type(module).forward is base.forward:
                object.__setattr__(module, ORIGINAL_CLASS, type(module))
                module.__class__ = fast
    if dtype in (None, torch.float32):
        measure_kernels(model)
    settings = model.__dict__.get(SETTINGS, {})
    if compile:  # torch.compile picks its own kernels and reads every weight as a plain tensor
        precision.unpack_model(model)
    if dtype is not None:
        precision.to_dtype(model, dtype, pack=not compile and not settings.get("compile"))
        settings["dtype"] = dtype
    if weights == "int8":
        settings["int8"] = settings.get("int8", 0) + precision.quantize_model(model, ORIGINAL_CLASS)
    if compile:
        settings["compile"] = compiled.compile_model(model) or "compiled"
    if settings:
        object.__setattr__(model, SETTINGS, settings)
    return model


def measure_kernels(model: nn.Module) -> None:
    """onednn.measure_kernels on the decoder's fp32 products (every block and the LM head) and one
    block's; a model without `blocks` on all its products. Nothing where oneDNN is missing."""
    def fp32_products(module: nn.Module | None) -> list[nn.Linear]:
        return [m for m in (module.modules() if module is not None else ()) if type(m) is FastLinear
                and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32 and m.weight.is_contiguous()]

    if onednn.ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled:
        return
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        decoder, block = fp32_products(blocks) + fp32_products(getattr(model, "lm_head", None)), fp32_products(blocks[0])
    else:
        decoder = block = fp32_products(model)
    if decoder and block:
        onednn.measure_kernels([(m.in_features, m.out_features) for m in decoder],
                               [(m.in_features, m.out_features) for m in block])


def restore(model: nn.Module) -> nn.Module:
    """Undo `optimize`, in place, and return `model`: plain classes, uncompiled, every parameter and
    buffer in the dtype it had. After bf16 or int8 the values keep that rounding (int8: int8 * scale):
    restore holds no fp32 copy to go back to, so memory never exceeds the reduced precision's."""
    compiled.uncompile_model(model)
    precision.dequantize_model(model, ORIGINAL_CLASS)
    precision.unpack_model(model)
    for module in model.modules():
        original = module.__dict__.pop(ORIGINAL_CLASS, None)
        if original is not None:
            module.__class__ = original
    precision.restore_dtypes(model)
    model.__dict__.pop(SETTINGS, None)
    return model


def is_optimized(model: nn.Module) -> bool:
    return any(ORIGINAL_CLASS in module.__dict__ for module in model.modules())


def describe(model: nn.Module) -> str:
    """One line: what `optimize` applied to `model`, for bench and CLI output."""
    if not is_optimized(model) and SETTINGS not in model.__dict__:
        return "plain PyTorch layers (accel not applied)"
    parameter = next(model.parameters(), None)
    dtype = str(parameter.dtype).removeprefix("torch.") if parameter is not None else "no parameters"
    classes = [type(m) for m in model.modules()]
    products = [m for m in model.modules() if type(m) is FastLinear]
    if dtype == "float32" and products:
        parts = [f"float32 products: {onednn.describe_choice(products[-1].in_features)}"]
    else:
        parts = [f"{dtype}: kernels per product"]
    if SDPASelfAttention in classes:
        parts.append("SDPA tower attention")
    packed = classes.count(precision.PackedLinear) + classes.count(precision.PackedSelfAttention)
    if packed:
        parts.append(f"{packed} bf16 products on prepacked oneDNN weights")
    if precision.Int8Linear in classes:
        parts.append(f"int8 weights in {classes.count(precision.Int8Linear)} decoder products")
    state = model.__dict__.get(SETTINGS, {}).get("compile")
    if state == "compiled":
        parts.append(f"torch.compile on {sum(compiled.is_compiled(m) for m in model.modules())} parts")
    elif state is not None:
        parts.append(f"not compiled ({state})")
    return "; ".join(parts)
