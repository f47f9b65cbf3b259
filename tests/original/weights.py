"""Deterministic random weights and pixels for the original GenerativeImage2Text layout, in plain torch.

The fixtures in `tests/original/fixtures/` never store weights: they store a layout (the original
model's `state_dict()` keys in order, each with its shape and, for a tied tensor, the key it is
tied to) and a seed. `make_weights` turns that back into the very tensors
`scripts/original_decoding_reference.py` loaded into the original model, so a test can load them
into git_scratch (through the original-checkpoint key table) and compare decoding with the
fixture. This file imports nothing but torch: the reference script imports it from outside the
project, inside the original's work tree.

The rule, one generator for the whole dict, drawn in layout order:
- a 1-D `*.weight` (every one is a LayerNorm gain in this layout) is 1 + norm_std * N(0, 1);
- everything else (matrices, biases, embeddings, CLS and temporal vectors) is std * N(0, 1);
- a tied key draws nothing and reuses its target's tensor (the LM head shares the word embeddings).
std 0.2 is the initializer_range of the parity tests: softmaxes far from uniform, so a wrong weight
cannot hide, and fp32 noise stays small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def layout_of(state_dict: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The layout of a state dict: key, shape and, where two keys share storage, the first key as `tied_to`."""
    first_key: dict[tuple[int, int, tuple[int, ...]], str] = {}
    layout = []
    for key, tensor in state_dict.items():
        entry: dict[str, Any] = {"key": key, "shape": list(tensor.shape)}
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if storage in first_key:
            entry["tied_to"] = first_key[storage]
        else:
            first_key[storage] = key
        layout.append(entry)
    return layout


def make_weights(layout: Sequence[Mapping[str, Any]], seed: int, std: float = 0.2,
                 norm_std: float = 0.1) -> dict[str, torch.Tensor]:
    """fp32 tensors for every key of `layout`, the same on every run for the same seed (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for entry in layout:
        key, shape = entry["key"], tuple(entry["shape"])
        if "tied_to" in entry:
            weights[key] = weights[entry["tied_to"]]
            continue
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        is_norm_gain = key.endswith(".weight") and len(shape) == 1
        weights[key] = 1.0 + norm_std * noise if is_norm_gain else std * noise
    return weights


def make_pixels(shape: Sequence[int], seed: int, block: int = 32) -> torch.Tensor:
    """Already-normalised pixel values, (B, 3, H, W) or, for video, (B, F, 3, H, W).

    A coarse N(0, 1) field of block x block squares plus N(0, 0.5) per pixel. Pure per-pixel noise
    would make every image look alike to the decoder (attention averages iid patches to the same
    mean), so captions would hardly depend on the image; the coarse field gives each image its own
    layout. H and W must be multiples of `block` (224, 480 and 640 are).
    """
    *lead, height, width = shape
    if height % block or width % block:
        raise ValueError(f"pixel shape {list(shape)}: height and width must be multiples of {block}")
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((*lead, height // block, width // block), generator=generator, dtype=torch.float32)
    fine = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    coarse = coarse.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return coarse + 0.5 * fine


def checksum(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> float:
    """Sum of |x| over all tensors in fp64: a regenerated set that drifted shows here first."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return float(sum(t.detach().double().abs().sum() for t in values))
