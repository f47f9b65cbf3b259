"""The three pixel pipelines ImageProcessor reproduces bit for bit: uint8 (3, H, W) -> resize -> crop -> float32.

GIT's checkpoints met three implementations of "CLIP preprocessing", and they differ by a grey level
or two (docs/processing.md, "Backends", measures how much):

    torchvision  transformers 5.x CLIPImageProcessor, its default (torchvision) backend
                 alpha composited on white; torch's antialiased bicubic (a = -0.75) on uint8;
                 crop offset int((h - c) / 2); float32 (x - 255 mean) / (255 std) in one step
    pil          transformers 4.x CLIPImageProcessor (and 5.x CLIPImageProcessorPil on RGB images)
                 alpha dropped (convert("RGB")); Pillow's bicubic (a = -0.5); offset (h - c) // 2;
                 x * rescale in float64, cast to float32, then (x - mean) / std
    original     microsoft/GenerativeImage2Text inference.py's get_image_transform
                 alpha dropped at load; Pillow's bicubic through torchvision's Resize; offset
                 round((h - c) / 2), half to even; ToTensor's float32 x / 255, then (x - mean) / std

Each step below is written after what the reference does, not after its code: the order of the
float32 operations is kept because it decides the last bit. An image smaller than the crop is
zero-padded first; transformers 4.x puts the odd pixel of padding at the top/left, torchvision (5.x
and the original's CenterCrop) at the bottom/right. The original's VQA models skip the crop and cap
the longer side (`original_resized_shape`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from PIL import Image

Backend = Literal["torchvision", "pil", "original"]
BACKENDS: tuple[Backend, ...] = ("torchvision", "pil", "original")
# What each backend's RGB conversion does with transparency (processor.to_rgb).
ALPHA: dict[Backend, Literal["white", "drop"]] = {"torchvision": "white", "pil": "drop", "original": "drop"}
# preprocessor_config.json stores PIL's resampling codes; transformers maps them to these modes
# (nearest to NEAREST_EXACT, which picks pixel centres as PIL does, not torch's legacy NEAREST).
INTERPOLATION = {
    Image.Resampling.NEAREST: tvF.InterpolationMode.NEAREST_EXACT,
    Image.Resampling.BILINEAR: tvF.InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: tvF.InterpolationMode.BICUBIC,
}


def resize(x: torch.Tensor, height: int, width: int, resample: int, backend: Backend) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, height, width)."""
    if backend == "torchvision":
        # Antialiased, on the uint8 tensor; torchvision rounds and clamps back to uint8.
        return tvF.resize(x, [height, width], interpolation=INTERPOLATION[resample], antialias=True)
    # transformers 4.x (to_pil_image, then Image.resize) and torchvision's Resize on a PIL image
    # (the original's) both end in Pillow's resize with no reducing_gap.
    image = Image.fromarray(x.permute(1, 2, 0).numpy())
    resized = image.resize((width, height), resample=resample, reducing_gap=None)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()  # (3, height, width)


def center_crop(x: torch.Tensor, crop: int, backend: Backend) -> torch.Tensor:
    """(C, H, W) -> (C, crop, crop), zero-padding first where the image is smaller than the crop."""
    height, width = x.shape[-2:]
    pad_w, pad_h = max(crop - width, 0), max(crop - height, 0)
    if pad_w or pad_h:
        small, large = (pad_w // 2, pad_h // 2), ((pad_w + 1) // 2, (pad_h + 1) // 2)
        left_top, right_bottom = (large, small) if backend == "pil" else (small, large)
        x = tvF.pad(x, [*left_top, *right_bottom], fill=0)  # left, top, right, bottom
        height, width = x.shape[-2:]
    if backend == "original":
        top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)  # Python's round: half to even
    else:
        top, left = (height - crop) // 2, (width - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def to_float(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], rescale_factor: float,
             do_rescale: bool, do_normalize: bool, backend: Backend) -> torch.Tensor:
    """uint8 (3, H, W) -> float32: rescale to [0, 1] and normalise per channel, rounded as the reference rounds."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    if backend == "torchvision" and do_rescale and do_normalize:
        # 5.x fuses the two steps into one normalisation on the 0-255 scale.
        return (x.to(torch.float32) - mean_t * (1.0 / rescale_factor)) / (std_t * (1.0 / rescale_factor))
    if not do_rescale:
        x = x.to(torch.float32)
    elif backend == "pil":
        x = (x.to(torch.float64) * rescale_factor).to(torch.float32)  # 4.x rescales in float64, then casts
    elif backend == "original":
        x = x.to(torch.float32) / (1.0 / rescale_factor)  # ToTensor divides by 255 in float32
    else:
        x = x.to(torch.float32) * rescale_factor
    return (x - mean_t) / std_t if do_normalize else x


def original_resized_shape(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """The original's resize target: shortest edge -> size, long edge truncated; with `max_size`
    (its VQA models' test_respect_ratio_max), `size` first shrinks, rounded half to even, until the
    long edge fits: a 2:1 image at 480 with max 640 becomes 320 x 640. Float operations in its order."""
    short, long = min(height, width), max(height, width)
    if max_size is not None and long / short * size > max_size:
        size = round(max_size * short / long)
    if size == 0:
        raise ValueError(f"a {width}x{height} image is too elongated for max_size = {max_size}: its short side "
                         "would be 0 pixels; crop it first or raise max_size")
    new_long = int(size * long / short)
    return (new_long, size) if width < height else (size, new_long)
