"""GitProcessorTest (tests/models/git/test_processing_git.py) and the ProcessorTesterMixin tests
that concern a text + image processor, re-written against git_scratch's GitProcessor.

Upstream's setUp saves `GitProcessor(CLIPImageProcessor(), BertTokenizer(tiny-random-BertModel))`
and reloads it. Here transformers saves the same pair, with our test WordPiece vocabulary instead
of the downloaded one (no network), and both libraries load that one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GitProcessor
from tests.data.test_tokenizer import write_vocab

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity
TEXT = "lower newer"  # upstream's prepare_text_inputs
TEXTS = ["lower newer", "upper older longer string"]


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = write_vocab(tmp_path_factory.mktemp("processor"))
    tokenizer = transformers.BertTokenizer.from_pretrained(directory, do_lower_case=True)
    transformers.GitProcessor(transformers.CLIPImageProcessor(), tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def theirs(directory: Path) -> Any:
    return transformers.GitProcessor.from_pretrained(directory)


@pytest.fixture(scope="module")
def ours(directory: Path) -> GitProcessor:
    return GitProcessor.from_pretrained(directory)


def image_inputs(batch: int = 1) -> list[Image.Image]:
    """Upstream's prepare_image_inputs: random (3, 30, 400) uint8 pictures, channels moved last."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(np.moveaxis(rng.integers(0, 255, (3, 30, 400), dtype=np.uint8), 0, -1))] * batch


def test_image_processor(ours: GitProcessor, theirs: Any) -> None:
    """processor(images=...) gives the image processor's pixel values: sums within upstream's 1e-2,
    and (stricter) every value within 1e-5 of transformers'."""
    images = image_inputs()
    mine = ours(images=images, return_tensors="np")["pixel_values"]
    reference = theirs.image_processor(images, return_tensors="np")["pixel_values"]
    assert mine.shape == reference.shape
    assert abs(mine.sum() - reference.sum()) < 1e-2
    np.testing.assert_allclose(mine, reference, atol=1e-5, rtol=0)


def test_tokenizer(ours: GitProcessor, theirs: Any) -> None:
    """processor(text=...) gives the tokenizer's ids and mask, with no token_type_ids."""
    mine = ours(text=TEXT, return_tensors=None)
    reference = theirs.tokenizer(TEXT, return_token_type_ids=False)
    assert list(mine) == list(reference)
    for key in reference:
        assert mine[key] == reference[key], key


def test_processor(ours: GitProcessor, theirs: Any) -> None:
    """test_processor and test_model_input_names: text and images give exactly these three keys, in
    this order, as transformers'; no input at all is a ValueError."""
    mine = ours(text=TEXT, images=image_inputs())
    reference = theirs(text=TEXT, images=image_inputs(), return_tensors="pt")
    assert list(mine) == ["input_ids", "attention_mask", "pixel_values"]
    assert [k for k in reference if k != "token_type_ids"] == list(mine)
    for key in mine:
        torch.testing.assert_close(mine[key], reference[key], atol=1e-5, rtol=0, check_dtype=False, msg=key)
    with pytest.raises(ValueError):
        ours()


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_tokenizer_decode(ours: GitProcessor, theirs: Any, skip_special_tokens: bool) -> None:
    """batch_decode of upstream's predicted ids equals the tokenizer's. (Ours skips special tokens by
    default, transformers' tokenizer does not: both settings are compared explicitly.)"""
    predicted_ids = [[1, 4, 5, 8, 1, 0, 8], [3, 4, 3, 1, 1, 8, 9]]
    mine = ours.batch_decode(predicted_ids, skip_special_tokens=skip_special_tokens)
    assert mine == theirs.tokenizer.batch_decode(predicted_ids, skip_special_tokens=skip_special_tokens)


def test_processor_from_and_save_pretrained(ours: GitProcessor, theirs: Any, tmp_path: Path) -> None:
    """ProcessorTesterMixin.test_processor_from_and_save_pretrained, and the save/load half of
    test_save_load_pretrained_additional_features: what ours saves, ours and transformers load back,
    with the same vocabulary and the same outputs."""
    ours.save_pretrained(tmp_path / "saved")
    again = GitProcessor.from_pretrained(tmp_path / "saved")
    reread = transformers.GitProcessor.from_pretrained(tmp_path / "saved")
    assert reread.tokenizer.get_vocab() == theirs.tokenizer.get_vocab()
    expected = ours(text=TEXTS, images=image_inputs(2), padding=True)
    for other in (again(text=TEXTS, images=image_inputs(2), padding=True),
                  reread(text=TEXTS, images=image_inputs(2), padding=True, return_tensors="pt")):
        for key in expected:
            torch.testing.assert_close(other[key], expected[key], atol=1e-5, rtol=0, check_dtype=False, msg=key)


@pytest.mark.parametrize("kwargs", [
    {"padding": "max_length", "max_length": 112},  # test_kwargs_overrides_default_tokenizer_kwargs
    {"padding": "max_length", "max_length": 76},  # test_unstructured_kwargs (text half)
], ids=["max_length_112", "max_length_76"])
def test_text_kwargs_with_images(ours: GitProcessor, theirs: Any, kwargs: dict[str, Any]) -> None:
    """Text keywords passed with images reach the tokenizer: the ids are max_length long, as transformers'."""
    mine = ours(text=TEXT, images=image_inputs(), **kwargs)
    reference = theirs(text=TEXT, images=image_inputs(), return_tensors="pt", **kwargs)
    assert mine["input_ids"].shape[-1] == kwargs["max_length"]
    assert torch.equal(mine["input_ids"], reference["input_ids"])
    assert torch.equal(mine["attention_mask"], reference["attention_mask"])


def test_unstructured_kwargs_batched(ours: GitProcessor, theirs: Any) -> None:
    """padding="longest" with max_length 76 over two texts: equal lengths, shorter than 76, as transformers'."""
    mine = ours(text=TEXTS, images=image_inputs(2), padding="longest", max_length=76)
    reference = theirs(text=TEXTS, images=image_inputs(2), padding="longest", max_length=76, return_tensors="pt")
    assert mine["input_ids"].shape[0] == 2 and mine["input_ids"].shape[1] < 76
    assert torch.equal(mine["input_ids"], reference["input_ids"])
