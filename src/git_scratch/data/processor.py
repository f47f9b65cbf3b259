"""Image preprocessing to `pixel_values`: load any image file as RGB, resize, centre-crop, normalise.

GIT checkpoints ship a `preprocessor_config.json` for transformers' `CLIPImageProcessor` (or, saved by
transformers 5.x, the same nested in `processor_config.json`; processor_config.py reads every layout). In
transformers 5.x `AutoImageProcessor` picks its torchvision backend by default, and by default this file
reproduces that backend step by step on the same PIL image (docs/processing.md, checked by
tests/data/test_processor.py to 1e-5). `backend="pil"` reproduces transformers 4.x instead and
`backend="original"` Microsoft's original test-time transform, bit for bit (backends.py,
tests/data/test_backends.py); the default pipeline is:

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

import dataclasses
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
from PIL import Image, ImageOps

from ..atomic import atomic_write_text
from . import backends
from .backends import ALPHA, BACKENDS, INTERPOLATION, Backend
from .inputs import ImageInput, ModelInputs, image_list, pixels_uint8, shorten_repr
from .processor_config import OWN_KEY, PREPROCESSOR_FILE, PROCESSOR_FILE, find_settings, parse_settings, read_json

CONFIG_NAME = PREPROCESSOR_FILE
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The original's VQA models (aux_data/models/*VQA*/parameter.yaml) cap the longer side at 4/3 of
# test_crop_size: 640 for 480 px (base), 560 for 420 px (large).
ORIGINAL_VQA_MAX = 4 / 3
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
    backend: Backend = "torchvision"  # whose pipeline to reproduce: "torchvision" (5.x), "pil" (4.x), "original"
    max_size: int | None = None  # "original" only: cap on the longer side after the resize (its VQA models)

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
        if self.backend not in BACKENDS:
            raise ValueError(f"backend = {self.backend!r} is not one of {', '.join(BACKENDS)}; pick one of them")
        if self.max_size is not None and not (self.backend == "original" and self.keep_aspect_ratio
                                              and _is_int(self.max_size) and 0 < self.max_size <= MAX_SIDE):
            raise ValueError(f"max_size = {self.max_size!r} needs backend 'original' (now {self.backend!r}) with "
                             f"keep_aspect_ratio and an integer in [1, {MAX_SIDE}]; or leave it None")

    @classmethod
    def original(cls, image_size: int = 224, task: Literal["caption", "vqa"] = "caption") -> ImageProcessor:
        """Microsoft's original test-time transform at `image_size` (its test_crop_size): "caption"
        resizes the short side and centre-crops a square; "vqa" (its VQA models) keeps the aspect
        ratio, caps the long side at 4/3 of image_size and does not crop."""
        return cls(size=image_size, crop_size=image_size).for_backend("original", task)

    def for_backend(self, backend: Backend, task: Literal["caption", "vqa"] = "caption") -> ImageProcessor:
        """These settings in another backend's pipeline. `task` matters to "original" alone, whose VQA
        models skip the crop; transformers' processors treat every task alike."""
        if task not in ("caption", "vqa"):
            raise ValueError(f"task = {task!r} is not supported; use 'caption' or 'vqa'")
        if backend != "original":
            return dataclasses.replace(self, backend=backend, max_size=None)
        vqa = task == "vqa"
        return dataclasses.replace(self, backend=backend, size=self.crop_size, keep_aspect_ratio=True,
                                   do_resize=True, do_center_crop=not vqa,
                                   max_size=round(self.crop_size * ORIGINAL_VQA_MAX) if vqa else None)

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: int | None = None,
                        backend: Backend | None = None) -> ImageProcessor:
        """Read the image processor of any transformers generation in `path`: processor_config.json's
        nested "image_processor" (5.x), else preprocessor_config.json (4.2x to 5.x; processor_config.py).
        Without either, CLIP preprocessing at `image_size` (224). The backend is the file's
        "git_scratch" entry (written by save_pretrained), else "torchvision", as transformers 5.x
        does for every file; `backend` overrides both (`for_backend`)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} not found")
        settings = find_settings(path)
        if settings is None:
            processor = cls() if image_size is None else cls(size=image_size, crop_size=image_size)
        else:
            processor = cls.from_dict(*settings)
            if image_size is not None and image_size != processor.crop_size:
                raise ValueError(f"{settings[1]} crops to {processor.crop_size} px but image_size = {image_size}; "
                                 f"drop image_size or edit crop_size and size in that file")
        return processor if backend is None else processor.for_backend(backend)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_NAME) -> ImageProcessor:
        """From transformers' field names, in any layout it has written (processor_config.parse_settings)."""
        fields = parse_settings(data, source)
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """transformers' field names, as in the official microsoft/git-* preprocessor_config.json; a
        backend other than the default adds {"git_scratch": {"backend": ..., "max_size": ...}}, a key
        transformers keeps as an unknown attribute (it refuses a top-level "backend")."""
        fields = asdict(self)
        square = {"height": self.size, "width": self.size}
        ours = {k: fields.pop(k) for k in ("backend", "max_size")}
        return {
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": self.size} if self.keep_aspect_ratio else square,
            "crop_size": {"height": self.crop_size, "width": self.crop_size},
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            **{k: v for k, v in fields.items() if k not in ("size", "keep_aspect_ratio", "crop_size", "mean", "std")},
            **({OWN_KEY: {k: v for k, v in ours.items() if v is not None}} if self.backend != "torchvision" else {}),
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
            image = self.load(image)
        if isinstance(image, Image.Image):
            if self.do_convert_rgb:
                image = to_rgb(image, ALPHA[self.backend])
            elif image.mode != "RGB":
                raise ValueError(f"{name} has mode {image.mode} and do_convert_rgb is false; convert it with to_rgb")
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
        else:
            x = pixels_uint8(image, name)  # (3, H, W) uint8
        if min(x.shape[-2:]) == 0:
            raise ValueError(f"{name} is empty ({x.shape[-2]}x{x.shape[-1]} pixels); pass an image with pixels")
        if self.do_resize:
            # The torchvision backend resizes the uint8 tensor with torch's kernel, the others with
            # PIL's bicubic: the two differ by ~1/255 (backends.py).
            height, width = self.resized_shape(*x.shape[-2:])
            x = backends.resize(x, height, width, self.resample, self.backend)
        if self.do_center_crop:
            x = backends.center_crop(x, self.crop_size, self.backend)
        return backends.to_float(x, self.mean, self.std, self.rescale_factor, self.do_rescale, self.do_normalize,
                                 self.backend)

    def load(self, path: str | Path) -> Image.Image:
        """An image file as this processor's backend sees it (`load_image`, its alpha rule)."""
        return load_image(path, self.size if self.do_resize else None, alpha=ALPHA[self.backend])

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize: shortest edge -> size, the long edge truncated, not rounded;
        size x size when keep_aspect_ratio is false; the original's rule when max_size is set."""
        if not self.keep_aspect_ratio:
            return self.size, self.size
        if self.max_size is not None:
            return backends.original_resized_shape(height, width, self.size, self.max_size)
        short, long = min(height, width), max(height, width)
        new_long = int(self.size * long / short)  # transformers' get_resize_output_image_size, torchvision's Resize
        return (new_long, self.size) if width <= height else (self.size, new_long)


def to_rgb(image: Image.Image, alpha: Literal["white", "drop"] = "white") -> Image.Image:
    """Any PIL mode -> RGB.

    Transparency (alpha band, RGBA palette or a `transparency` colour) is composited on white, as
    transformers 5.x does, or with alpha "drop" ignored, as Pillow's `convert("RGB")` in transformers
    4.x and the original does. 16-bit and float images, which Pillow's own convert would clip at 255,
    are scaled to 8 bits first (`eight_bit`). Everything else is Pillow's `convert("RGB")`.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = eight_bit(image)
    if alpha == "white" and image.has_transparency_data:
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


def load_image(path: str | Path, shortest_edge: int | None = 224,
               alpha: Literal["white", "drop"] = "white") -> Image.Image:
    """Open any image file Pillow reads and return it in RGB (`to_rgb`, its `alpha` rule), upright.

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
            image = to_rgb(ImageOps.exif_transpose(image), alpha)
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
