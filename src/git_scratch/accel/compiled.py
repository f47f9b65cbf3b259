"""torch.compile of the vision tower and of each decoder block, applied from outside.

Each part keeps its class and is still called as `part(x)`: `compile_model` sets an instance
`forward` that runs the compiled graph, and `uncompile_model` deletes it. What compile changes:

- Hooks. Hooks on a compiled part itself run as always (around its forward). A hook, or the
  attention recording (`Attention.weights`, `output_attentions`), on a module INSIDE a part would
  be traced into the graph at best, and one registered after compiling would not fire at all
  (dynamo does not guard on hooks): so any call that finds one, or a global module hook, runs
  that part eagerly instead, and every hook fires. Only the speed changes.
- Shapes. The first call of each shape compiles: inductor's C++ build took 40-84 s for the tests'
  tiny model on the shared 2-core machine, paid by the first `generate`, then 15 ms a caption.
  A decode step's shapes stay fixed over a caption, since the cache is preallocated, so the loop
  replays one graph. Other shapes (batch, prompt length, max_new_tokens, the prefix's mask-free
  call) compile more graphs, and past dynamo's recompile limit (8 per forward) a part runs eagerly:
  still exact (the demo's held-out set, scripts/precision_agreement.py), but compile suits a
  fixed serving shape.
- CUDA graphs: not used (mode "reduce-overhead" is not set). The decode step writes its keys and
  values into the cache in place (`index_copy_`) and takes its position as a Python int, so the
  graph's inputs change address and value between steps; it was not run on a GPU here, and a
  replayed graph that read a stale cache would give wrong tokens silently.

Where dynamo, inductor or (on CPU) a C++ compiler is missing, `compile_model` warns once, in one
line naming the reason, and leaves the model uncompiled and working.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

BACKEND = "inductor"  # tests/accel/test_compiled.py sets "aot_eager": the same tracing, no C++ build


def unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python"
    try:
        importlib.import_module("torch._inductor")  # the backend; a build may lack it
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        elif device.type == "cuda":
            importlib.import_module("triton")
    except Exception as error:  # a missing module or compiler raises its own kind
        return f"inductor cannot compile for {device.type} ({type(error).__name__}: {error})".split("\n")[0]
    return None


def compiled_parts(model: nn.Module) -> list[nn.Module]:
    """The vision tower and each decoder block: the parts whose inside compile may fuse."""
    parts = [model.vision] if isinstance(getattr(model, "vision", None), nn.Module) else []
    return parts + list(getattr(model, "blocks", ()))


def compile_model(model: nn.Module) -> str | None:
    """Compile every part in place; returns why not (after one warning) or None."""
    device = next(model.parameters()).device
    reason = unavailable(device) if BACKEND == "inductor" else None
    if reason is not None:
        warnings.warn(f"accel.optimize(compile=True): {reason}; the model runs uncompiled", stacklevel=3)
        return reason
    for part in compiled_parts(model):
        if not is_compiled(part):
            object.__setattr__(part, "forward", CompiledForward(part))
    return None


def uncompile_model(model: nn.Module) -> None:
    for part in model.modules():
        if is_compiled(part):
            del part.__dict__["forward"]


def is_compiled(part: nn.Module) -> bool:
    return isinstance(part.__dict__.get("forward"), CompiledForward)


class CompiledForward:
    """A part's instance `forward`: its class's forward compiled, or run eagerly while observed.
    A deep copy of the model compiles its own copy (a closure would keep calling the original's)."""

    def __init__(self, part: nn.Module) -> None:
        self.part = part
        self.compiled = torch.compile(type(part).forward.__get__(part), backend=BACKEND)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if observed(self.part):
            return type(self.part).forward(self.part, *args, **kwargs)
        return self.compiled(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> CompiledForward:
        return CompiledForward(copy.deepcopy(self.part, memo))


def observed(part: nn.Module) -> bool:
    """Whether a hook or a recording looks inside `part` (then it runs eagerly, see above)."""
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks \
            or module_globals._global_backward_hooks or module_globals._global_backward_pre_hooks:
        return True
    for inner in part.modules():
        if inner is not part and (inner._forward_hooks or inner._forward_pre_hooks or inner._backward_hooks
                                  or inner._backward_pre_hooks):
            return True
        if getattr(inner, "weights", None) is not None and isinstance(inner.weights, list):
            return True  # Attention's recording list: output_attentions, tools/attention.py
    return False
