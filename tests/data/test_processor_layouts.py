"""The image processor read from every file layout transformers has written (data/processor_config.py).

Each layout is written here as its era wrote it: transformers 5.x's GitProcessor.save_pretrained
by calling it (processor_config.json with the image processor nested, no preprocessor_config.json),
the older ones as literal JSON with the field names of that era's CLIP feature extractor and image
processor. Where the installed transformers loads the directory, our pixel values must equal its
image processor's; every file that is present but not understood must be a one-line ValueError
naming the file and the field.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from git_scratch import GitProcessor
from git_scratch.cli.common import load_pipeline
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from tests.conftest import hf_tiny, save_hf
from tests.data.test_processor import hf_pixels, noise, waves

transformers = pytest.importorskip("transformers")

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# transformers 4.2x before 4.26: CLIPFeatureExtractor, sizes as ints (microsoft/git-base as first
# uploaded, at 40 px so that a default of 224 cannot pass).
FEATURE_EXTRACTOR = {"crop_size": 40, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": MEAN, "image_std": STD,
                     "resample": 3, "size": 48}
# transformers 4.26 to 5.x: CLIPImageProcessor, sizes as dicts (microsoft/git-base today).
IMAGE_PROCESSOR = {"crop_size": {"height": 40, "width": 40}, "do_center_crop": True, "do_convert_rgb": True,
                   "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": MEAN,
                   "image_processor_type": "CLIPImageProcessor", "image_std": STD, "processor_class": "GitProcessor",
                   "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 48}}
# The fast (torchvision) class of transformers 4.4x, with size dicts written out whole, unused keys
# null. transformers 5.24 itself refuses such a size, so this one is checked against IMAGE_PROCESSOR.
FAST = {**IMAGE_PROCESSOR, "image_processor_type": "CLIPImageProcessorFast",
        "size": {"shortest_edge": 48, "longest_edge": None, "height": None, "width": None},
        "crop_size": {"height": 40, "width": 40, "shortest_edge": None}, "default_to_square": False}

LAYOUTS: dict[str, tuple[dict[str, Any], tuple[int, bool, int]]] = {  # config, (size, keep_aspect_ratio, crop)
    "4.2x feature extractor, ints": (FEATURE_EXTRACTOR, (48, True, 40)),
    "4.26+ image processor, dicts": (IMAGE_PROCESSOR, (48, True, 40)),
    "fast class, null entries": (FAST, (48, True, 40)),
    "size as height and width": ({**IMAGE_PROCESSOR, "size": {"height": 44, "width": 44}}, (44, False, 40)),
    "size and crop as lists": ({**IMAGE_PROCESSOR, "size": [44, 44], "crop_size": [40, 40]}, (44, False, 40)),
    "dict size, int crop": ({**IMAGE_PROCESSOR, "crop_size": 40}, (48, True, 40)),
}


def write(directory: Path, name: str, content: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(content))
    return directory


def images() -> list[Any]:
    return [noise(97, 61), noise(50, 80, seed=1), waves(130, 90)]


def assert_same_pixels(ours: ImageProcessor, directory: Path) -> None:
    theirs = transformers.AutoImageProcessor.from_pretrained(directory)
    for image in images():
        torch.testing.assert_close(ours([image]), hf_pixels(theirs, image), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_preprocessor_config_of_every_era(tmp_path: Path, layout: str) -> None:
    config, (size, keep_aspect_ratio, crop) = LAYOUTS[layout]
    directory = write(tmp_path, "preprocessor_config.json", config)
    ours = ImageProcessor.from_pretrained(directory)
    assert (ours.size, ours.keep_aspect_ratio, ours.crop_size) == (size, keep_aspect_ratio, crop)
    if config is FAST:
        directory = write(tmp_path / "loadable", "preprocessor_config.json", IMAGE_PROCESSOR)
    assert_same_pixels(ours, directory)


def test_processor_config_of_transformers_5(tmp_path: Path) -> None:
    """transformers 5.x's GitProcessor.save_pretrained nests the image processor in
    processor_config.json and writes no preprocessor_config.json: read at 224 px before."""
    directory = tmp_path / "saved"
    tokenizer = transformers.BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5})
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 48, "width": 48})
    transformers.GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    assert not (directory / "preprocessor_config.json").exists()
    nested = json.loads((directory / "processor_config.json").read_text())
    assert nested["image_processor"]["size"] == {"shortest_edge": 56}  # the layout this module reads

    ours = ImageProcessor.from_pretrained(directory)
    assert (ours.size, ours.crop_size) == (56, 48)
    assert_same_pixels(ours, directory)
    assert GitProcessor.from_pretrained(directory)(images=noise())["pixel_values"].shape == (1, 3, 48, 48)


def test_processor_config_is_read_first_as_in_transformers(tmp_path: Path) -> None:
    nested = write(tmp_path / "nested", "processor_config.json",
                   {"image_processor": {**IMAGE_PROCESSOR, "crop_size": {"height": 32, "width": 32}},
                    "processor_class": "GitProcessor"})
    write(nested, "preprocessor_config.json", IMAGE_PROCESSOR)
    assert ImageProcessor.from_pretrained(nested).crop_size == 32
    assert transformers.AutoImageProcessor.from_pretrained(nested).crop_size.height == 32

    # 4.x wrote a processor_config.json for a processor's other settings; it does not hide the image processor.
    flat = write(tmp_path / "flat", "processor_config.json", {"processor_class": "GitProcessor"})
    write(flat, "preprocessor_config.json", IMAGE_PROCESSOR)
    assert ImageProcessor.from_pretrained(flat).crop_size == 40


def test_save_refuses_a_directory_whose_processor_config_would_win(tmp_path: Path) -> None:
    write(tmp_path, "processor_config.json", {"image_processor": IMAGE_PROCESSOR})
    with pytest.raises(FileExistsError, match="processor_config.json holds an image processor"):
        ImageProcessor(size=32, crop_size=32).save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()


def test_square_resize_round_trips_through_transformers(tmp_path: Path) -> None:
    squash = ImageProcessor(size=44, keep_aspect_ratio=False, crop_size=40)
    squash.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["size"] == {"height": 44, "width": 44}
    assert ImageProcessor.from_pretrained(tmp_path) == squash
    assert squash([noise(97, 61)]).shape == (1, 3, 40, 40)
    assert_same_pixels(squash, tmp_path)


BAD: dict[str, tuple[str, dict[str, Any], str]] = {  # file, content, what the message must name
    "longest edge": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "size": {"longest_edge": 48}}, "size = "),
    "shortest and longest": ("preprocessor_config.json",
                             {**IMAGE_PROCESSOR, "size": {"shortest_edge": 48, "longest_edge": 96}}, "size = "),
    "oblong resize": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "size": {"height": 40, "width": 50}}, "size = "),
    "size as text": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "size": "224"}, "size = "),
    "size as bool": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "size": True}, "size = "),
    "crop height only": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "crop_size": {"height": 40}}, "crop_size = "),
    "oblong crop list": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "crop_size": [40, 30]}, "crop_size = "),
    "two means": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "image_mean": [0.5, 0.5]}, "image_mean = "),
    "std as text": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "image_std": "0.27"}, "image_std = "),
    "rescale as text": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "rescale_factor": "1/255"}, "rescale_factor"),
    "resample by name": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "resample": "bicubic"}, "resample = "),
    "flag as text": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "do_resize": "yes"}, "do_resize = "),
    "another processor": ("preprocessor_config.json", {**IMAGE_PROCESSOR, "image_processor_type": "ViTImageProcessor"},
                          "image_processor_type = "),
    "nested bad size": ("processor_config.json", {"image_processor": {**IMAGE_PROCESSOR, "size": {"longest_edge": 9}}},
                        "(image_processor): size = "),
    "nested not an object": ("processor_config.json", {"image_processor": "CLIPImageProcessor"}, "image_processor = "),
    "no image processor anywhere": ("processor_config.json", {"processor_class": "GitProcessor"},
                                    "has no image_processor"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_file_not_understood_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    name, content, field = BAD[case]
    directory = write(tmp_path, name, content)
    with pytest.raises(ValueError) as error:
        ImageProcessor.from_pretrained(directory)
    message = str(error.value)
    assert str(directory / name) in message and field in message and "\n" not in message and "; " in message
    with pytest.raises(ValueError):  # GitProcessor goes through the same reader
        GitProcessor.from_pretrained(directory)


def test_cli_pipeline_reads_processor_config(tmp_path: Path) -> None:
    """load_pipeline looked for preprocessor_config.json only, and without it used the ViT's 32 px."""
    directory = save_hf(hf_tiny(pad_token_id=0, bos_token_id=2, eos_token_id=3), tmp_path / "ckpt")
    GitTokenizer.word_level([f"w{i}" for i in range(95)]).save_pretrained(directory)
    write(directory, "processor_config.json", {"image_processor": {**IMAGE_PROCESSOR, "size": {"shortest_edge": 40}}})
    pipe = load_pipeline(argparse.Namespace(model=str(directory), device="cpu", dtype="fp32"))
    assert (pipe.processor.size, pipe.processor.crop_size) == (40, 40)
