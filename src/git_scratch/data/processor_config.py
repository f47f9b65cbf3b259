"""The image processor's settings from every file layout transformers has written, as ImageProcessor's fields.

transformers (image_processing_base.py) looks in two files, in this order, and so do we:

    processor_config.json     {"image_processor": {...}, "processor_class": "GitProcessor"}
                              5.x GitProcessor.save_pretrained: the image processor nested, and
                              no preprocessor_config.json beside it
    preprocessor_config.json  {"image_processor_type": "CLIPImageProcessor",
                               "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, ...}
                              4.26 to 5.x (microsoft/git-* today)
                              {"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224, ...}
                              4.2x before 4.26 (microsoft/git-* as first uploaded)

A processor_config.json without "image_processor" (transformers 4.x wrote one for a processor's
other settings) leaves the image processor to preprocessor_config.json, as in transformers.

`size` is the resize: an int or {"shortest_edge": n} keeps the aspect ratio (CLIP's int means
shortest edge, transformers' default_to_square=False), {"height": n, "width": n} or [n, n]
squashes to n x n. `crop_size` is the square crop: an int, {"height": n, "width": n} or [n, n].
A file that is present but not understood is a one-line ValueError naming the file and the
field: a size transformers would resize differently (longest_edge, max_height, non-square), a
field of the wrong type, another processor than CLIP's. Never defaults in its place.

Which pipeline to reproduce (ImageProcessor.backend) is not in transformers' files: 5.x picks its
torchvision backend for every one of them, 4.x had only PIL. A file without our own entry
{"git_scratch": {"backend": "pil" | "original", "max_size": n}} (ImageProcessor.save_pretrained
writes it for a backend other than the default) therefore reads as "torchvision", whatever
transformers generation wrote it: never guessed from the writer, so loading never changes silently.
transformers keeps the entry as an unknown attribute; a top-level "backend" would break its loading.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .inputs import shorten_repr

PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
# The classes transformers has saved CLIP's preprocessing under: 4.2x's feature extractor, the image
# processor, its 4.4x fast (torchvision) twin, and 5.x's PIL backend.
CLIP_TYPES = ("CLIPFeatureExtractor", "CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil")
FLAGS = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
OWN_KEY = "git_scratch"
OWN_FIELDS = ("backend", "max_size")


def find_settings(directory: Path) -> tuple[dict[str, Any], str] | None:
    """The image processor's JSON object in `directory` and where it came from (the file, and
    "(image_processor)" when nested); None when the directory has neither file."""
    processor_file, preprocessor_file = directory / PROCESSOR_FILE, directory / PREPROCESSOR_FILE
    if processor_file.is_file():
        data = read_json(processor_file)
        if "image_processor" in data:
            nested = data["image_processor"]
            if not isinstance(nested, dict):
                raise ValueError(f"{processor_file}: image_processor = {shorten_repr(nested)} is not a JSON object; "
                                 "restore the file from the original checkpoint")
            return nested, f"{processor_file} (image_processor)"
        if not preprocessor_file.is_file():
            raise ValueError(f"{processor_file} has no image_processor and there is no {PREPROCESSOR_FILE} beside "
                             "it; copy the processor files of the original checkpoint into that directory")
    if preprocessor_file.is_file():
        return read_json(preprocessor_file), str(preprocessor_file)
    return None


def parse_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """transformers' field names and value shapes -> ImageProcessor's keyword arguments. A field
    that is absent or null keeps ImageProcessor's default (microsoft/git-base's value)."""
    kind = data.get("image_processor_type") or data.get("feature_extractor_type")
    if kind is not None and kind not in CLIP_TYPES:
        raise ValueError(f"{source}: image_processor_type = {shorten_repr(kind)} is not CLIP's preprocessing, which "
                         "GIT was trained with; write a CLIPImageProcessor config (ImageProcessor().save_pretrained)")
    fields: dict[str, Any] = {}
    if data.get("size") is not None:
        fields["size"], fields["keep_aspect_ratio"] = resize_side(data["size"], source)
    if data.get("crop_size") is not None:
        fields["crop_size"] = crop_side(data["crop_size"], source)
    for name in ("image_mean", "image_std"):
        value = data.get(name)
        if value is not None:
            if not (isinstance(value, list) and len(value) == 3 and all(_is_finite(x) for x in value)):
                raise ValueError(f"{source}: {name} = {shorten_repr(value)} is not a list of three numbers, one per "
                                 "RGB channel; correct it in that file or delete the field for CLIP's values")
            fields[name.removeprefix("image_")] = tuple(value)
    value = data.get("rescale_factor")
    if value is not None:
        if not (_is_finite(value) and value > 0):
            raise ValueError(f"{source}: rescale_factor = {shorten_repr(value)} is not a positive number; correct it "
                             "in that file or delete the field for 1/255")
        fields["rescale_factor"] = value
    value = data.get("resample")
    if value is not None:
        if not _is_int(value):
            raise ValueError(f"{source}: resample = {shorten_repr(value)} is not a PIL resampling code; write 3 "
                             "(bicubic), 2 (bilinear) or 0 (nearest) in that file")
        fields["resample"] = value
    for name in FLAGS:
        value = data.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {name} = {shorten_repr(value)} is not true or false; write true or "
                                 "false in that file")
            fields[name] = value
    return {**fields, **own_settings(data.get(OWN_KEY), source)}


def own_settings(value: Any, source: str) -> dict[str, Any]:
    """Our entry {"backend": ..., "max_size": ...} -> those fields (ImageProcessor checks their values)."""
    if value is None:
        return {}
    if not (isinstance(value, dict) and set(value) <= set(OWN_FIELDS)):
        raise ValueError(f"{source}: {OWN_KEY} = {shorten_repr(value, 80)} is not an object of "
                         f"{', '.join(OWN_FIELDS)}; correct it in that file or delete {OWN_KEY} for the default")
    return {k: v for k, v in value.items() if v is not None}


def resize_side(value: Any, source: str) -> tuple[int, bool]:
    """`size` -> (side, keep_aspect_ratio): 224 or {"shortest_edge": 224} -> (224, True);
    {"height": 224, "width": 224} or [224, 224] -> (224, False). Null entries are ignored."""
    if _is_int(value):
        return value, True
    if isinstance(value, dict) and set(_entries(value)) == {"shortest_edge"} and _is_int(value["shortest_edge"]):
        return value["shortest_edge"], True
    side = _square(value)
    if side is None:
        raise ValueError(f"{source}: size = {shorten_repr(value, 80)} is not supported, GIT resizes by the shortest "
                         'edge or to a square; write {"shortest_edge": N}, a plain int N or {"height": N, "width": N}')
    return side, False


def crop_side(value: Any, source: str) -> int:
    """`crop_size` -> its side: 224, {"height": 224, "width": 224} or [224, 224] -> 224."""
    side = value if _is_int(value) else _square(value)
    if side is None:
        raise ValueError(f"{source}: crop_size = {shorten_repr(value, 80)} is not supported, GIT's images are "
                         'square; write {"height": N, "width": N} or a plain int N')
    return side


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{file} is not valid JSON ({e}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} is not a JSON object; is it a {file.name} of transformers?")
    return data


def _square(value: Any) -> int | None:
    """{"height": n, "width": n} or [n, n] (transformers' (height, width) order) -> n; anything else None."""
    if isinstance(value, dict) and set(_entries(value)) == {"height", "width"}:
        value = [value["height"], value["width"]]
    if isinstance(value, list) and len(value) == 2 and _is_int(value[0]) and value[0] == value[1]:
        return value[0]
    return None


def _entries(value: dict[str, Any]) -> dict[str, Any]:
    # A SizeDict written out whole carries its unused keys as null; they say nothing.
    return {k: v for k, v in value.items() if v is not None}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
