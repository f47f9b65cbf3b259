"""The variant layout: a changed model (docs/extending.md) saved with the code that rebuilds it.

    variant.json        {"builder": "extend_preln:rebuild",       a function cfg -> GIT, as package.module:function
                         "config": {...},                         our GitConfig (GitConfig.to_dict), not HF's
                         "tied": {"lm_head.weight": "embed.word.weight"}}   names stored once, for shared tensors
    model.safetensors   model.state_dict() under our own names: no key table, nothing dropped
    tokenizer.json, tokenizer_config.json, preprocessor_config.json    as in the official layout

The official layout (files.py, hub.py) has names for GIT's tensors and no others. A model with a
changed decoder or tower is written here instead, and read by the same loader: `git_scratch.load`
and `GIT.from_pretrained` see variant.json, import the builder, call it with the config, load the
weights strictly and apply `accel.optimize`, so every command (caption, vqa, eval, train --init)
works on it. A model loaded from a variant remembers its builder (`builder_of`): training or
saving it again writes the variant layout with the same builder.

Loading a variant runs code by design: importing the builder's module executes it, as `import`
does, so load only variants whose builder you would run. The weights are never unpickled: a
safetensors file holds tensors only.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_directory, atomic_write, atomic_write_text
from ..config import GitConfig
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..model.git import GIT
from .hub import listed, ready

VARIANT_FILE = "variant.json"
WEIGHTS_FILE = "model.safetensors"
# package.module:function, the spelling of entry points; the function may be an attribute path (Class.method).
BUILDER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
BUILDER_ATTR = "_git_scratch_builder"  # where a model keeps the builder it was loaded or trained with


@dataclass(frozen=True)
class Variant:
    builder: str | None  # None: trained with official_layout=False and no builder; only resumable from Python
    config: GitConfig
    tied: dict[str, str]  # a name left out of the weights file -> the stored name holding its tensor


def is_variant(directory: str | Path) -> bool:
    return (Path(directory) / VARIANT_FILE).is_file()


def builder_of(model: GIT) -> str | None:
    """The builder a model was loaded from a variant with, or trained with; None for plain GIT."""
    return getattr(model, BUILDER_ATTR, None)


def set_builder(model: GIT, builder: str) -> GIT:
    setattr(model, BUILDER_ATTR, builder)
    return model


# --- reading ----------------------------------------------------------------------------------------


def read_variant(directory: Path) -> Variant:
    path = directory / VARIANT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it, or re-save the model with "
                         "git_scratch.save_variant") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} is not a variant file (a JSON object with \"builder\" and a \"config\" object); "
                         "re-save the model with git_scratch.save_variant")
    builder, tied = data.get("builder"), data.get("tied", {})
    if builder is not None and not (isinstance(builder, str) and BUILDER.fullmatch(builder)):
        raise ValueError(f"{path}: builder {builder!r} is not package.module:function; name the function "
                         "that rebuilds the model from its GitConfig, e.g. extend_preln:rebuild")
    if not (isinstance(tied, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items())):
        raise ValueError(f"{path}: \"tied\" must map tensor names to tensor names; restore it, or re-save "
                         "the model with git_scratch.save_variant")
    return Variant(builder, GitConfig.from_dict(data["config"], source=f"{path} config"), tied)


def resolve_builder(builder: str, source: str) -> Callable[[GitConfig], GIT]:
    """Import `package.module` and return its `function`: this runs the module's code."""
    if not BUILDER.fullmatch(builder):
        raise ValueError(f"{source}: builder {builder!r} is not package.module:function; name the function "
                         "that rebuilds the model from its GitConfig, e.g. extend_preln:rebuild")
    module_name, _, function = builder.partition(":")
    top = module_name.split(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise ValueError(f"{source}: builder {builder} cannot be imported (no module named {e.name!r}); put "
                             f"the folder holding {top}.py or {top}/ on PYTHONPATH (PYTHONPATH=scripts for "
                             "scripts/extend_*.py), or run python -m git_scratch.cli from that folder") from None
        raise ValueError(f"{source}: importing builder module {module_name} failed (no module named {e.name!r}); "
                         "install what it imports") from None
    except ImportError as e:
        raise ValueError(f"{source}: importing builder module {module_name} failed ({e}); "
                         "fix that module's imports") from None
    target: object = module
    for part in function.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"{source}: module {module_name} ({getattr(module, '__file__', '?')}) has no "
                             f"{function}; check the name after ':' in the builder")
    if not callable(target):
        raise ValueError(f"{source}: {builder} is a {type(target).__name__}, not a function; "
                         "name a function that takes a GitConfig and returns the model")
    return target


def build_variant(builder: str, cfg: GitConfig, source: str = "builder") -> GIT:
    """`builder(cfg)`, checked to be a GIT, remembering its builder. Its weights are the builder's own init."""
    model = resolve_builder(builder, source)(cfg)
    if not isinstance(model, GIT):
        raise ValueError(f"{source}: {builder}(cfg) returned a {type(model).__name__}, not a GIT; "
                         "make the builder return the model it builds")
    return set_builder(model, builder)


def load_variant(directory: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 fast: bool = True) -> GIT:
    """A variant directory -> the rebuilt model in eval mode, its weights loaded strictly; as
    `files.load_pretrained` (which calls this when it finds variant.json), `fast` applies accel."""
    directory = Path(directory)
    variant = read_variant(directory)
    if variant.builder is None:
        raise ValueError(f"{directory / VARIANT_FILE} names no builder (trained with official_layout=False and no "
                         "builder); set \"builder\" to the package.module:function that rebuilds the model, "
                         "see docs/extending.md")
    with torch.random.fork_rng(devices=[]):  # the builder's init is overwritten: it must not move the caller's RNG
        model = build_variant(variant.builder, variant.config, source=str(directory / VARIANT_FILE))
    load_variant_weights(model, directory, variant)
    return ready(model, device=device, dtype=dtype, fast=fast)


def load_variant_weights(model: GIT, directory: Path, variant: Variant | None = None) -> None:
    """model.safetensors into `model`, in place; every name and shape must match, else one line lists them."""
    variant = variant or read_variant(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a variant directory needs the weights saved with its "
                                "variant.json, re-save the model")
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises many types for a damaged file
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "the file is damaged or truncated, re-save it") from None
    for alias, stored in variant.tied.items():
        if stored in tensors:
            tensors[alias] = tensors[stored]
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    problems = ([f"missing {listed(missing)}"] if missing else []) + \
               ([f"unexpected {listed(unexpected)}"] if unexpected else []) + \
               [f"{k} is {tuple(tensors[k].shape)} in the file, {expected[k]} in the model" for k in reshaped[:3]]
    if problems:
        what = f"the model {variant.builder} builds" if variant.builder else "the model given"
        raise ValueError(f"{path} does not fit {what}: {'; '.join(problems)}; "
                         "load it with the builder and code it was saved with")
    model.load_state_dict(tensors, strict=True)


# --- writing ----------------------------------------------------------------------------------------


def check_builder(model: GIT, builder: str) -> None:
    """Before training or saving, not at the first load: `builder(model.cfg)` must build a model
    with `model`'s tensor names and shapes, or the saved directory would not load. The caller's
    RNG is left as it was: a training run's dropout must not depend on this check."""
    with torch.random.fork_rng(devices=[]):
        built = build_variant(builder, model.cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    if ours != theirs:
        missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        reshaped = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
        problems = ([f"it lacks {listed(missing)}"] if missing else []) + \
                   ([f"it adds {listed(extra)}"] if extra else []) + \
                   ([f"other shapes for {listed(reshaped)}"] if reshaped else [])
        raise ValueError(f"builder {builder} does not rebuild this model ({', '.join(problems)}); make it apply "
                         "the same change as the code that built the model")


def write_variant_files(model: GIT, directory: Path, builder: str | None) -> None:
    """variant.json and model.safetensors into an existing (temporary) directory."""
    tensors, tied, first = {}, {}, {}
    storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        view = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and view in first:  # a tied weight: stored once (safetensors refuses shared memory)
            tied[name] = first[view]
            continue
        first[view] = name
        tensor = tensor.detach().cpu().contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # a view into another tensor's memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    spec = {"builder": builder, "config": model.cfg.to_dict(), "tied": tied}
    atomic_write_text(directory / VARIANT_FILE, json.dumps(spec, indent=2) + "\n")
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def save_variant(model: GIT, path: str | Path, builder: str | None = None, *, tokenizer: GitTokenizer | None = None,
                 processor: ImageProcessor | None = None, force: bool = False) -> None:
    """variant.json + model.safetensors (+ the tokenizer and processor files when given), written
    into a temporary directory then renamed. `builder` defaults to the one the model was loaded with."""
    builder = builder or builder_of(model)
    if builder is None:
        raise ValueError("save_variant needs builder='package.module:function', a function that rebuilds "
                         "the model from its GitConfig; see docs/extending.md")
    writer = atomic_directory(Path(path), force=force)  # refuses an existing directory before the check
    check_builder(model, builder)
    with writer as tmp:
        write_variant_files(model, tmp, builder)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
