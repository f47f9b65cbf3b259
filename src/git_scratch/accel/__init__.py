"""Kernel choices, applied to a built model from outside: the model's code never calls them.

    model = accel.optimize(model)   # the kernels measured faster on this machine, in place
    accel.restore(model)            # plain PyTorch layers again

`optimize` changes the class of eligible modules to a subclass whose `forward` picks the kernel
(onednn.py): each module keeps its identity, parameters, buffers and hooks, so an optimizer, a
DDP wrapper or a hook made before or after still sees the same objects, and `state_dict` is
unchanged. Eligible means a layer that still runs its base class's own forward: a LoRA layer or
any subclass with a forward of its own is left alone. Outputs differ from the plain model's by
float rounding only (tests/accel, and tests/parity runs both ways).

`git_scratch.load` and `train` apply it; `GIT(cfg)` builds plain layers.
"""

from __future__ import annotations

from torch import nn

from .onednn import FastLinear, SDPASelfAttention

# base class -> the class `optimize` gives its plain instances
FAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: FastLinear,
    nn.MultiheadAttention: SDPASelfAttention,
}
ORIGINAL_CLASS = "_accel_original_class"  # where a swapped module keeps the class it had


def optimize(model: nn.Module) -> nn.Module:
    """Swap in the fast kernels, in place, and return `model`. Calling it twice changes nothing."""
    for module in model.modules():
        for base, fast in FAST_CLASSES.items():
            if isinstance(module, base) and type(module).forward is base.forward:
                object.__setattr__(module, ORIGINAL_CLASS, type(module))
                module.__class__ = fast
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo `optimize`, in place, and return `model`."""
    for module in model.modules():
        original = module.__dict__.pop(ORIGINAL_CLASS, None)
        if original is not None:
            module.__class__ = original
    return model


def is_optimized(model: nn.Module) -> bool:
    return any(ORIGINAL_CLASS in module.__dict__ for module in model.modules())
