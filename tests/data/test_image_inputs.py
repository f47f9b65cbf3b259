"""What ImageProcessor takes: every kind of image gives the pixels of the one pipeline, and every
wrong input is a one-line ValueError naming it and the fix. No transformers needed here; the
pipeline itself is checked against transformers in test_processor.py and test_git_processor.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch.data.processor import ImageProcessor, load_image, sniff_media


@pytest.fixture(scope="module")
def processor() -> ImageProcessor:
    return ImageProcessor(size=32, crop_size=32)


def rgb(height: int = 45, width: int = 61, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_kind_of_image_gives_the_same_pixels(processor: ImageProcessor, tmp_path: Path) -> None:
    array = rgb()
    Image.fromarray(array).save(tmp_path / "a.png")
    expected = processor([Image.fromarray(array)])  # (1, 3, 32, 32), today's call
    kinds = {
        "PIL alone": Image.fromarray(array),
        "str path": str(tmp_path / "a.png"),
        "Path": tmp_path / "a.png",
        "numpy uint8 (H, W, 3)": array,
        "numpy float in [0, 1]": array / 255.0,
        "numpy float32": (array / 255.0).astype(np.float32),
        "numpy int64 in [0, 255]": array.astype(np.int64),
        "tensor uint8 (3, H, W)": torch.from_numpy(array).permute(2, 0, 1),
        "tensor float in [0, 1]": torch.from_numpy(array).permute(2, 0, 1) / 255.0,
        "tensor float16": (torch.from_numpy(array).permute(2, 0, 1) / 255.0).half(),
    }
    for name, image in kinds.items():
        assert torch.equal(processor(image), expected), name
        assert torch.equal(processor([image]), expected), name
        assert torch.equal(processor.preprocess(image), expected[0]), name
    other = rgb(30, 30, seed=1)
    pair = processor([Image.fromarray(array), Image.fromarray(other)])
    assert torch.equal(processor(np.stack([array[:30, :30], other])),  # a 4-D array is a batch
                       processor([array[:30, :30], other]))
    assert torch.equal(processor([tmp_path / "a.png", torch.from_numpy(other).permute(2, 0, 1)]), pair)


def test_return_tensors_as_transformers(processor: ImageProcessor) -> None:
    image = Image.fromarray(rgb())
    plain = processor(image)
    assert isinstance(plain, torch.Tensor)  # the default stays today's return value
    as_pt = processor(image, return_tensors="pt")
    assert list(as_pt) == ["pixel_values"] and torch.equal(as_pt.pixel_values, plain)
    as_np = processor([image], return_tensors="np")
    assert isinstance(as_np["pixel_values"], np.ndarray) and np.array_equal(as_np.pixel_values, plain.numpy())
    with pytest.raises(ValueError, match="return_tensors = 'tf' is not supported"):
        processor(image, return_tensors="tf")


WRONG = {
    "None": (None, "images is None; pass a PIL image"),
    "an int": (3, "images is int 3; pass a PIL image"),
    "a 2-D array": (np.zeros((4, 5), np.uint8), "images is a numpy array of shape (4, 5); numpy images are (H, W, 3)"),
    "a list mixing types": ([Image.new("RGB", (8, 8)), 3], "images[1] is int 3; pass a PIL image"),
    "a list holding None": ([Image.new("RGB", (8, 8)), None], "images[1] is None"),
    "bytes": (b"/no/such/file.jpg", "images is bytes (b'/no/such/file.jpg'); pass a path as str or Path"),
    "an empty list": ([], "no images to preprocess"),
    "a nested list": ([[Image.new("RGB", (8, 8))]], "images[0] is list"),
    "an (H, W, 3) tensor": (torch.zeros(8, 9, 3), "images is a tensor of shape (8, 9, 3); tensor images are (3, H, W)"),
    "a (3, H, W) array": (np.zeros((3, 8, 9), np.uint8), "numpy images are (H, W, 3)"),
    "0-255 floats": (np.full((8, 8, 3), 200.0), "values in [200, 200]; float pixels must lie in [0, 1]"),
    "normalised pixels": (torch.full((3, 8, 8), -1.5), "values in [-1.5, -1.5]"),
    "NaN": (np.full((8, 8, 3), np.nan), "float pixels must lie in [0, 1]"),
    "integers over 255": (np.full((8, 8, 3), 300, np.int32), "integer image with values in [300, 300]"),
    "a bool tensor": (torch.ones(3, 8, 8, dtype=torch.bool), "tensor of dtype torch.bool"),
    "strings": (np.full((8, 8, 3), "x"), "numpy array of dtype <U1"),
    "no pixels": (np.zeros((0, 8, 3), np.uint8), "images is empty (0x8 pixels)"),
}


@pytest.mark.parametrize("case", WRONG, ids=WRONG)
def test_wrong_inputs_are_one_line_value_errors(processor: ImageProcessor, case: str) -> None:
    value, needle = WRONG[case]
    with pytest.raises(ValueError) as error:
        processor(value)
    message = str(error.value)
    assert needle in message and "\n" not in message and "; " in message, message


def test_paths_as_bytes_and_wrong_path_types(tmp_path: Path) -> None:
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    assert load_image(bytes(tmp_path / "a.png")).size == (61, 45)  # a file name as the OS gives it
    with pytest.raises(FileNotFoundError, match="image file .*nope.jpg not found"):
        load_image(bytes(tmp_path / "nope.jpg"))
    with pytest.raises(FileNotFoundError, match="media file .*nope.jpg not found"):
        sniff_media(bytes(tmp_path / "nope.jpg"))
    for function in (load_image, sniff_media):
        with pytest.raises(ValueError, match=r"path is int 3; pass a str or pathlib.Path"):
            function(3)


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as as_image:
        load_image(tmp_path)
    assert str(as_image.value) == f"{tmp_path} is a directory; pass image files, e.g. {tmp_path / '*.jpg'}"
    with pytest.raises(ValueError) as as_media:
        sniff_media(tmp_path)
    assert str(as_media.value) == f"{tmp_path} is a directory; pass image or video files, e.g. {tmp_path / '*.jpg'}"
