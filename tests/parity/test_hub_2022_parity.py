"""transformers and git_scratch load the same 2022-era hub directory (tests/checkpoints/hub_2022.py)
and agree: logits to 1e-5 for each weight layout, pixel values of the era's CLIPFeatureExtractor
preprocessor_config.json to 1e-5, token ids of its BERT tokenizer files exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import git_scratch
from git_scratch import GitTokenizer, ImageProcessor
from tests.checkpoints.hub_2022 import WEIGHTS, Weights, write_2022_layout
from tests.conftest import hf_tiny

pytestmark = pytest.mark.parity
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(2)
    return hf_tiny()


@pytest.mark.parametrize("weights", WEIGHTS)
def test_logits_equal_transformers_on_the_same_directory(hf, weights: Weights, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / weights, weights)
    theirs = transformers.GitForCausalLM.from_pretrained(directory).eval()
    ours = git_scratch.load(directory)
    pixel_values = torch.randn(2, 3, 32, 32)
    input_ids = torch.randint(3, 99, (2, 6))
    input_ids[:, 0] = 1
    with torch.no_grad():
        expected = theirs(pixel_values=pixel_values, input_ids=input_ids).logits[:, -input_ids.shape[1]:]
        logits = ours(pixel_values, input_ids)
    assert expected.abs().max() > 0.1  # a real model, not zeros from a failed load
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_pixel_values_equal_the_era_feature_extractor(hf, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / "ckpt", "bin")
    theirs = transformers.AutoImageProcessor.from_pretrained(directory)
    ours = ImageProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((61, 97), (40, 33))]
    expected = theirs(images, return_tensors="pt").pixel_values
    assert expected.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours(images), expected, atol=1e-5, rtol=0)


def test_token_ids_equal_the_era_tokenizer(hf, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / "ckpt", "bin")
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    ours = GitTokenizer.from_pretrained(directory)
    for text in ("A Cat sitting on the table.", "two dogs, RED", ""):
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
