"""A checkpoint directory in the official layout, read and written: config.json plus
model.safetensors (single or sharded) or pytorch_model.bin, through the names of hub.py. A
directory holding variant.json is a changed model in the variant layout (variant.py): the same
loader hands it to `variant.load_variant`.

An original microsoft/GenerativeImage2Text `model.pt` (a file, not a directory) is read by original.py.

A .bin is a pickle: it is read with `weights_only=True`, so no code in it ever runs. Writes go
to a temporary directory renamed into place (atomic.py): a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_directory
from ..config import GitConfig
from ..model.git import GIT
from .hub import (
    FUSED_PARTS,
    check_official_layout,
    config_from_hf,
    config_to_hf,
    from_hf_state_dict,
    model_from_state_dict,
    ready,
    to_hf_state_dict,
)
from .original import load_original
from .variant import is_variant, load_variant


def read_hf_config(path: Path) -> GitConfig:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a checkpoint directory needs the config.json "
                                "that came with its weights")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from the original checkpoint") from None
    return config_from_hf(data, source=str(path))


def read_hf_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint directory, and the file name to blame in errors."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    bin_single, bin_index = directory / "pytorch_model.bin", directory / "pytorch_model.bin.index.json"
    if single.is_file():
        return _read_file(single), str(single)
    for idx in (index, bin_index):
        if idx.is_file():
            try:
                shards = set(json.loads(idx.read_text(encoding="utf-8"))["weight_map"].values())
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError,
                    AttributeError) as e:
                raise ValueError(f"{idx} is not a valid shard index ({e!r}); re-download it") from None
            if not all(isinstance(shard, str) for shard in shards):
                raise ValueError(f"{idx} is not a valid shard index (a weight_map value is not a file name); "
                                 "re-download it")
            tensors: dict[str, torch.Tensor] = {}
            for shard in sorted(shards):
                tensors |= _read_file(directory / shard)
            return tensors, str(idx)
    if bin_single.is_file():
        return _read_file(bin_single), str(bin_single)
    raise FileNotFoundError(f"{directory} has no model.safetensors, model.safetensors.index.json or "
                            "pytorch_model.bin; is it a GIT checkpoint directory?")


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (listed in the shard index); re-download the checkpoint")
    try:
        if path.suffix == ".safetensors":
            tensors = load_file(path)  # mapped: a tensor's pages are read when it is first used
        else:  # weights_only: a .bin is a pickle, and we never execute code from a checkpoint.
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and pickle raise many types for a damaged file
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "the file is damaged or truncated, re-download or re-save it") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; is it a model checkpoint?")
    if path.suffix == ".safetensors":  # load_file has checked the header and the file's size
        tensors |= _read_unmapped(path, [name for name in tensors if FUSED_PARTS.fullmatch(name)])
    return tensors


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _read_unmapped(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file read with plain file reads into memory of their own.

    For q, k and v: the converter concatenates them into one fused tensor, and pages of the
    mapping it had read would stay resident beside that copy until the mapping closes, 127 MB
    for git-base (docs/performance.md). Read this way, they are freed once fused.

    All of them go into one buffer, freed at once. Freed one by one, each (2-4 MB) raised
    glibc's dynamic mmap threshold, after which the process kept up to 250 MB of freed
    activations resident (git-large, encoding one image; docs/performance.md)."""
    with path.open("rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        # A part of another dtype stays mapped; from_hf_state_dict names the wrong dtype.
        names = [name for name in names if header[name]["dtype"] in SAFETENSORS_DTYPES]
        spans = [header[name]["data_offsets"] for name in names]
        places = [0]  # each part's offset in the buffer, rounded up to 64 bytes for any dtype's view
        for start, end in spans:
            places.append(places[-1] + (end - start + 63) // 64 * 64)
        buffer = torch.empty(places[-1], dtype=torch.uint8)
        tensors = {}
        for name, (start, end), at in zip(names, spans, places):
            part = buffer[at:at + end - start]
            f.seek(8 + header_size + start)
            if f.readinto(part.numpy()) != end - start:
                raise ValueError(f"{path} ends inside {name}, so it changed while being read; "
                                 "read it again or re-download it")
            info = header[name]
            tensors[name] = part.view(SAFETENSORS_DTYPES[info["dtype"]]).view(info["shape"])
    return tensors


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    fast: bool = True, variant: str | None = None) -> GIT:
    """A checkpoint directory -> GIT in eval mode. `fast=True` applies `accel.optimize` (the
    kernels measured faster on this machine; outputs differ by float rounding only), and
    `accel.restore(model)` takes them off again; `fast=False` returns plain PyTorch layers.
    With dtype=torch.bfloat16 on a CPU with bf16 products, `fast` also packs the products'
    weights for inference (accel/precision.py): restore the model before training it.
    A variant directory (variant.json) imports and runs its builder's code (variant.py).
    An original model.pt file loads through original.py: `variant` names which one it is
    ("GIT_BASE_COCO"), unless its folders do (output/GIT_BASE_COCO/snapshot/model.pt)."""
    directory = Path(path)
    if directory.suffix == ".pt" and directory.is_file():
        return load_original(directory, variant, dtype=dtype, device=device, fast=fast)
    if variant is not None:
        raise ValueError(f"variant={variant!r} names an original model.pt, but {directory} is not one; "
                         "drop variant, a checkpoint directory carries its own config.json")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory; pass a directory holding "
                                "config.json and model.safetensors")
    if is_variant(directory):
        return load_variant(directory, dtype=dtype, device=device, fast=fast)
    cfg = read_hf_config(directory / "config.json")
    hf_sd, source = read_hf_tensors(directory)
    sd = from_hf_state_dict(hf_sd, cfg, source=source)
    return ready(model_from_state_dict(sd, cfg), device=device, dtype=dtype, fast=fast)


def save_pretrained(model: GIT, path: str | Path, *, force: bool = False) -> None:
    """config.json + model.safetensors, written into a temporary directory then renamed."""
    with atomic_directory(Path(path), force=force) as tmp:
        write_model_files(model, tmp)


def write_model_files(model: GIT, directory: Path) -> None:
    """The official layout's two files, into an existing (temporary) directory."""
    check_official_layout(model)
    dtype = next(model.parameters()).dtype
    tensors = to_hf_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, model.cfg)
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.cfg, dtype), indent=2) + "\n")
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
