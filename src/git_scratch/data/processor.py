"""Image preprocessing to `pixel_values`: load any image file as RGB, resize, centre-crop, normalise.

GIT checkpoints ship a `preprocessor_config.json` for transformers' `CLIPImageProcessor` (or, saved by
transformers 5.x, the same nested in `processor_config.json`; processor_config.py reads every layout). In
transformers 5.x `AutoImageProcessor` picks its torchvision backend by default, and this file
reproduces that backend step by step on the same PIL image (docs/processing.md, checked by
tests/data/test_processor.py to 1e-5):

    PIL image --to_rgb--> uint8 (3, H, W)                          (alpha composited on white)
              --tvF.resize, shortest edge -> size, antialiased--> uint8 (3, h, w)
              --centre crop, offset int((h - crop) / 2)--> uint8 (3, crop, crop)
              --(x - mean / rescale) / (std / rescale)--> float32 (3, crop, crop)

Paths go through `load_image`; numpy (H, W, 3) arrays and (3, H, W) tensors join at the uint8
(3, H, W) step (`pixels_uint8`: floats in [0, 1] rounded to 8 bits), so every kind of input
takes the one pipeline above. `load_image` is where file concerns live (EXIF rotation, 16-bit
and float modes, animated files, huge files); `sniff_media` tells images from videos by content.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from PIL import Image, ImageOps

from ..atomic import atomic_write_text
from .inputs import ImageInput, ModelInputs, image_list, pixels_uint8, shorten_repr
from .processor_config import PREPROCESSOR_FILE, PROCESSOR_FILE, find_settings, parse_settings, read_json

CONFIG_NAME = PREPROCESSOR_FILE
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# preprocessor_config.json stores PIL's resampling codes; transformers maps them to these modes
# (nearest to NEAREST_EXACT, which picks pixel centres as PIL does, not torch's legacy NEAREST).
INTERPOLATION = {
    Image.Resampling.NEAREST: tvF.InterpolationMode.NEAREST_EXACT,
    Image.Resampling.BILINEAR: tvF.InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: tvF.InterpolationMode.BICUBIC,
}
# load_image shrinks a file by an integer factor only while it stays at least this many times the
# processor's resize target, so anything under twice that (3584 px shortest side for 224) is
# decoded at full size and matches transformers exactly.
KEEP_TIMES_TARGET = 8
# Largest resize target or crop accepted from a preprocessor_config.json: GIT's are 224 to 480,
# and a damaged value must not allocate gigabytes per image.
MAX_SIDE = 4096


@dataclass(frozen=True)
class ImageProcessor:
    """The CLIP preprocessing GIT was trained with. Defaults are microsoft/git-base's config."""

    size: int = 224  # shortest edge after the resize (aspect ratio kept)
    keep_aspect_ratio: bool = True  # False: resize to size x size, as a size of {"height": n, "width": n} says
    crop_size: int = 224  # side of the square centre crop; the ViT's image_size
    mean: tuple[float, float, float] = CLIP_MEAN  # per channel, on the [0, 1] scale
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255  # uint8 -> [0, 1]
    resample: int = 3  # PIL code, as in the JSON: 3 bicubic, 2 bilinear, 0 nearest
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True  # False: every image must already be mode RGB

    def __post_init__(self) -> None:
        if not all(_is_int(side) and 0 < side <= MAX_SIDE for side in (self.size, self.crop_size)):
            raise ValueError(f"size = {self.size!r} and crop_size = {self.crop_size!r} must be integers "
                             f"in [1, {MAX_SIDE}]")
        if not _is_int(self.resample) or self.resample not in INTERPOLATION:
            raise ValueError(f"resample = {self.resample!r} is not supported; use 3 (bicubic), 2 (bilinear) "
                             "or 0 (nearest)")
        numbers = (*self.mean, *self.std, self.rescale_factor)
        if (len(self.mean) != 3 or len(self.std) != 3 or not all(_is_real(x) and math.isfinite(x) for x in numbers)
                or 0 in self.std or self.rescale_factor <= 0):
            raise ValueError(f"mean = {self.mean} and std = {self.std} need three numbers each, std non-zero, "
                             f"and rescale_factor = {self.rescale_factor!r} a positive number")
        for name in ("keep_aspect_ratio", "do_resize", "do_center_crop", "do_rescale", "do_normalize",
                     "do_convert_rgb"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} = {getattr(self, name)!r} must be true or false")

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: int | None = None) -> ImageProcessor:
        """Read the image processor of any transformers generation in `path`: processor_config.json's
        nested "image_processor" (5.x), else preprocessor_config.json (4.2x to 5.x; processor_config.py).
        Without either, CLIP preprocessing at `image_size` (224)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} not found")
        settings = find_settings(path)
        if settings is None:
            return cls() if image_size is None else cls(size=image_size, crop_size=image_size)
        processor = cls.from_dict(*settings)
        if image_size is not None and image_size != processor.crop_size:
            raise ValueError(f"{settings[1]} crops to {processor.crop_size} px but image_size = {image_size}; "
                             f"drop image_size or edit crop_size and size in that file")
        return processor

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_NAME) -> ImageProcessor:
        """From transformers' field names, in any layout it has written (processor_config.parse_settings)."""
        fields = parse_settings(data, source)
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """transformers' field names, as in the official microsoft/git-* preprocessor_config.json."""
        fields = asdict(self)
        square = {"height": self.size, "width": self.size}
        return {
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": self.size} if self.keep_aspect_ratio else square,
            "crop_size": {"height": self.crop_size, "width": self.crop_size},
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            **{k: v for k, v in fields.items() if k not in ("size", "keep_aspect_ratio", "crop_size", "mean", "std")},
        }

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `path/preprocessor_config.json` atomically (temp file, then rename); returns the file."""
        path = Path(path)
        nested = path / PROCESSOR_FILE
        if nested.is_file() and "image_processor" in read_json(nested):
            # transformers and from_pretrained read the nested one first: the file written here would be ignored.
            raise FileExistsError(f"{nested} holds an image processor that would be read instead of the "
                                  f"{CONFIG_NAME} written here; delete it or save into another directory")
        path.mkdir(parents=True, exist_ok=True)
        file = path / CONFIG_NAME
        atomic_write_text(file, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return file

    def __call__(self, images: ImageInput | Sequence[ImageInput],
                 return_tensors: Literal["pt", "np"] | None = None) -> torch.Tensor | ModelInputs:
        """One image or a list of them, any sizes -> pixel_values (B, 3, crop, crop) float32.

        Each image is a PIL image, a path (str or Path), an (H, W, 3) numpy array or a (3, H, W)
        tensor, uint8 or float in [0, 1]; a 4-D array or tensor is a batch of them. Returns the
        tensor itself, or with `return_tensors` "pt" / "np", as transformers' image processors do,
        {"pixel_values": tensor / ndarray} (readable as `.pixel_values` too).
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors = {return_tensors!r} is not supported; use 'pt', 'np', "
                             "or None for the tensor itself")
        pixels = [self.preprocess(image, name) for name, image in image_list(images)]
        if not self.do_center_crop and len({p.shape for p in pixels}) > 1:
            raise ValueError("images end up with different sizes because do_center_crop is false; "
                             "enable it or preprocess them one at a time")
        pixel_values = torch.stack(pixels)  # (B, 3, crop, crop)
        if return_tensors is None:
            return pixel_values
        return ModelInputs(pixel_values=pixel_values if return_tensors == "pt" else pixel_values.numpy())

    def preprocess(self, image: ImageInput, name: str = "image") -> torch.Tensor:
        """One image, of any kind `__call__` takes -> (3, crop, crop) float32. `name` is what errors call it."""
        if isinstance(image, (str, Path)):
            image = load_image(image, self.size if self.do_resize else None)
        if isinstance(image, Image.Image):
            if self.do_convert_rgb:
                image = to_rgb(image)
            elif image.mode != "RGB":
                raise ValueError(f"{name} has mode {image.mode} and do_convert_rgb is false; convert it with to_rgb")
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
        else:
            x = pixels_uint8(image, name)  # (3, H, W) uint8
        if min(x.shape[-2:]) == 0:
            raise ValueError(f"{name} is empty ({x.shape[-2]}x{x.shape[-1]} pixels); pass an image with pixels")
        if self.do_resize:
            # Antialiased resize on the uint8 tensor (torchvision rounds and clamps back to uint8),
            # not PIL's bicubic: that is transformers' default backend, and the two differ by ~1/255.
            height, width = self.resized_shape(*x.shape[-2:])
            x = tvF.resize(x, [height, width], interpolation=INTERPOLATION[self.resample], antialias=True)
        if self.do_center_crop:
            x = center_crop(x, self.crop_size)
        return self.normalize(x)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize: shortest edge -> size, the long edge truncated, not rounded;
        size x size when keep_aspect_ratio is false."""
        if not self.keep_aspect_ratio:
            return self.size, self.size
        short, long = min(height, width), max(height, width)
        new_long = int(self.size * long / short)  # transformers' get_resize_output_image_size
        return (new_long, self.size) if width <= height else (self.size, new_long)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32. Rescale and normalise fused into one step, in transformers'
        order of float32 operations, so the rounding is the same too."""
        x = x.to(torch.float32)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        if self.do_rescale and self.do_normalize:
            return (x - mean * (1.0 / self.rescale_factor)) / (std * (1.0 / self.rescale_factor))
        if self.do_rescale:
            return x * self.rescale_factor
        if self.do_normalize:
            return (x - mean) / std
        return x


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(C, H, W) -> (C, crop, crop). The offset is int((H - crop) / 2): the extra odd pixel is cut
    from the bottom/right. An image smaller than the crop is first zero-padded, the odd pixel
    of padding going to the bottom/right (transformers' torchvision backend does both)."""
    height, width = x.shape[-2:]
    pad_w, pad_h = max(crop - width, 0), max(crop - height, 0)
    if pad_w or pad_h:
        x = tvF.pad(x, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)  # left, top, right, bottom
        height, width = x.shape[-2:]
    top, left = int((height - crop) / 2), int((width - crop) / 2)
    return x[..., top : top + crop, left : left + crop]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB.

    Transparency (alpha band, RGBA palette or a `transparency` colour) is composited on white, as
    transformers does. 16-bit and float images, which Pillow's own convert would clip at 255, are
    scaled to 8 bits first (`eight_bit`). Everything else is Pillow's `convert("RGB")`.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = eight_bit(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit or float single-channel image -> mode L.

    I;16*: value / 257 (65535 -> 255). I: Pillow's mode for 16-bit PNG and TIFF data, so the same
    scale, after clipping to [0, 65535]. F: if all values lie in [0, 1] (the usual float
    convention) they are scaled by 255; otherwise they are taken as 0-255 and clipped, as Pillow
    does. NaN becomes 0.
    """
    values = np.asarray(image).astype(np.float32)  # exact for every 16-bit value
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0 and values.max() <= 1:
            values = values * 255
    else:
        values = np.clip(values, 0, 65535) / 257
    return Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), mode="L")


def load_image(path: str | Path, shortest_edge: int | None = 224) -> Image.Image:
    """Open any image file Pillow reads and return it in RGB, upright.

    - EXIF orientation is applied (transformers does not do this for PIL inputs).
    - Animated GIF/WebP/APNG: the first frame.
    - Huge files: when the shortest side is at least 2 * KEEP_TIMES_TARGET times `shortest_edge`
      (the processor's resize target), the image is shrunk by an integer factor that keeps it at
      least KEEP_TIMES_TARGET times the target: JPEGs at decode time (`draft`, so the full image
      never exists in memory), others by box-averaging (`Image.reduce`). `None` never shrinks.
    - Pillow's decompression-bomb limit stays on; hitting it is a ValueError.
    """
    path = as_path(path, "image")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass image files, e.g. {path / '*.jpg'}")
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    try:
        with _quiet_pillow(), Image.open(path) as image:
            factor = _shrink_factor(image.size, shortest_edge)
            if factor > 1:
                # Only JPEG decoders can scale (by 1/2, 1/4 or 1/8); for other formats a no-op.
                image.draft(None, (image.width // factor, image.height // factor))
            image.load()  # the first frame of an animated file
            image = to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError:
        raise ValueError(_bomb_message(path)) from None
    except Exception as e:  # Pillow's plugins raise many types (struct.error, EOFError, ...) for a damaged file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is not an image Pillow can read ({reason})") from None
    factor = _shrink_factor(image.size, shortest_edge)
    return image.reduce(factor) if factor > 1 else image


def as_path(path: Any, what: str) -> Path:
    """str, bytes (a file name as the OS gives it) or any os.PathLike -> Path; anything else is refused."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{what} path is {type(path).__name__} {shorten_repr(path)}; pass a str or pathlib.Path")
    return Path(path)


def _bomb_message(path: Path) -> str:
    return (f"{path} has more pixels than Pillow's decompression-bomb limit ({2 * Image.MAX_IMAGE_PIXELS}); "
            "if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS or shrink the image first")


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow warns, and does not raise, between MAX_IMAGE_PIXELS and twice that (such images
    load, shrunk as load_image says) and on damaged metadata it skips (EXIF, TIFF tags). Neither
    is the user's error, and a CLI run should print one line per file, so both are silenced here.
    Over twice the limit Pillow raises, and we refuse with one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _shrink_factor(size: tuple[int, int], shortest_edge: int | None) -> int:
    if shortest_edge is None:
        return 1
    return max(min(size) // (KEEP_TIMES_TARGET * shortest_edge), 1)


def sniff_media(path: str | Path) -> Literal["image", "video"]:
    """"image" or "video", decided by the file's content, never its extension."""
    path = as_path(path, "media")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass image or video files, e.g. {path / '*.jpg'}")
    if not path.is_file():
        raise FileNotFoundError(f"media file {path} not found")
    try:
        with _quiet_pillow(), Image.open(path) as image:
            # Pillow's MPEG plugin recognises MPEG video headers but decodes nothing.
            if image.format != "MPEG":
                return "image"
    except Image.DecompressionBombError:
        # An image, and too big: refuse now, before FFmpeg's image demuxers take it for a video.
        raise ValueError(_bomb_message(path)) from None
    except Exception:  # not an image; Pillow's plugins raise many types while guessing a format
        pass
    try:
        with av.open(str(path)) as container:
            # FFmpeg guesses some formats from the file name (image2 for *.jpg); a stream whose
            # frame size it could not find (or whose codec it does not know) is not a video.
            if any(getattr(s.codec_context, "width", 0) > 0 for s in container.streams.video):
                return "video"
    except (av.FFmpegError, OSError, ValueError):
        pass
    raise ValueError(f"{path} is neither an image Pillow can open nor a video with a video stream")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
