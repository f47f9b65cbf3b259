"""What the processors take and what they return.

Take: an image is a PIL image, a path, an (H, W, 3) numpy array or a (3, H, W) tensor
(docs/processing.md, "Inputs"). Arrays and tensors become uint8 (3, H, W) here
(`pixels_uint8`), where processor.py's pipeline starts for PIL images too; anything else is
refused in one line that names the input and the fix.

Return: `ModelInputs`. transformers' processors return a `BatchFeature` / `BatchEncoding`, and
code ported from them reads `inputs.pixel_values` or calls `inputs.to(device)`; this dict
supports both and nothing else, so `model(**inputs)` and `inputs["input_ids"]` work as with a
plain dict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# What ImageProcessor takes as one image; paths are opened by processor.load_image.
ImageInput = Image.Image | str | Path | np.ndarray | torch.Tensor


class ModelInputs(dict):
    """{"pixel_values": ..., "input_ids": ..., "attention_mask": ...}, or the part a processor made."""

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        return object.__getattribute__(self, name)  # Python's own AttributeError, as for any object

    def to(self, device: torch.device | str) -> ModelInputs:
        """The tensors moved to `device`; lists and arrays as they are."""
        return ModelInputs({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def image_list(images: Any) -> list[tuple[str, ImageInput]]:
    """One image or many -> (name for errors, image) pairs; a 4-D array or tensor is a batch."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return [(f"images[{i}]", image) for i, image in enumerate(images)]
    if not isinstance(images, (list, tuple)):
        return [("images", images)]
    if not images:
        raise ValueError("no images to preprocess; pass an image or a non-empty list of them")
    return [(f"images[{i}]", image) for i, image in enumerate(images)]


def pixels_uint8(image: Any, name: str) -> torch.Tensor:
    """An (H, W, 3) numpy array or a (3, H, W) tensor -> uint8 (3, H, W). Floats must lie in
    [0, 1] and are rounded to 8 bits, so every input takes the one pipeline that matches
    transformers; integers must lie in [0, 255]."""
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "uif":
            raise ValueError(f"{name} is a numpy array of dtype {image.dtype}; "
                             "pass uint8 (0-255) or float (0-1) pixels")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} is a numpy array of shape {image.shape}; numpy images are (H, W, 3) RGB "
                             "(greyscale (H, W): np.stack([a] * 3, axis=-1))")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
    elif isinstance(image, torch.Tensor):
        if image.dtype == torch.bool or image.is_complex():
            raise ValueError(f"{name} is a tensor of dtype {image.dtype}; pass uint8 (0-255) or float (0-1) pixels")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{name} is a tensor of shape {tuple(image.shape)}; tensor images are (3, H, W) RGB "
                             "(from (H, W, 3): t.permute(2, 0, 1))")
        x = image.detach().cpu()
    elif isinstance(image, bytes):
        raise ValueError(f"{name} is bytes ({image[:40]!r}); pass a path as str or Path (os.fsdecode(b)), "
                         "or file contents as PIL.Image.open(io.BytesIO(b))")
    else:
        what = "None" if image is None else f"{type(image).__name__} {shorten_repr(image)}"
        raise ValueError(f"{name} is {what}; pass a PIL image, a path "
                         "(str or Path), an (H, W, 3) numpy array or a (3, H, W) tensor, or a list of them")
    if x.dtype == torch.uint8:
        return x.contiguous()
    x = x.double() if x.is_floating_point() else x.long()  # exact for every value either may hold here
    low, high = (float(v) for v in x.aminmax()) if x.numel() else (0.0, 0.0)
    if x.is_floating_point():
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low and high <= 1):
            raise ValueError(f"{name} is a float image with values in [{low:g}, {high:g}]; float pixels must lie "
                             "in [0, 1] (divide 0-255 values by 255, or pass uint8)")
        return (x * 255).round().to(torch.uint8).contiguous()
    if low < 0 or high > 255:
        raise ValueError(f"{name} is an integer image with values in [{low:g}, {high:g}]; pass pixels in [0, 255]")
    return x.to(torch.uint8).contiguous()


def shorten_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
