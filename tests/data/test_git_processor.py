"""GitProcessor against transformers' GitProcessor, both loaded from one directory written here.

The directory holds what a checkpoint ships: tokenizer.json and tokenizer_config.json saved by
transformers from a WordPiece vocabulary (test_tokenizer.py's), and a preprocessor_config.json
in microsoft/git-base's layout at 32 px. Same calls, same keys (less token_type_ids, which GIT
has no use for), the same ids, and pixel values within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT, GitProcessor
from tests.conftest import tiny_config
from tests.data.test_tokenizer import TEXTS, write_vocab

transformers = pytest.importorskip("transformers")

PREPROCESSOR = {
    "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}, "do_center_crop": True,
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "processor_class": "GitProcessor", "resample": 3,
    "rescale_factor": 0.00392156862745098,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = write_vocab(tmp_path_factory.mktemp("git-processor"))
    transformers.BertTokenizer.from_pretrained(directory, do_lower_case=True).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return directory


@pytest.fixture(scope="module")
def theirs(checkpoint: Path) -> Any:
    return transformers.GitProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def ours(checkpoint: Path) -> GitProcessor:
    return GitProcessor.from_pretrained(checkpoint)


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((45, 61), (80, 33), (32, 32))]


def without_token_types(inputs: Any) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k != "token_type_ids"}


CALLS = {
    "one text": {"text": "A small RED circle, left of a blue square."},
    "texts, padded": {"text": TEXTS[:40], "padding": True},
    "texts, longest, left": {"text": TEXTS[:40], "padding": "longest", "padding_side": "left"},
    "texts, max_length": {"text": TEXTS[3:9], "padding": "max_length", "max_length": 40, "truncation": True},
    "texts, truncated": {"text": TEXTS[:40], "truncation": True, "max_length": 6, "padding": True},
    "no specials": {"text": ["what color is the square?", "a"], "add_special_tokens": False, "padding": True},
}


@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
@pytest.mark.parametrize("call", CALLS, ids=CALLS)
def test_text_matches_transformers(ours: GitProcessor, theirs: Any, call: str, return_tensors: str | None) -> None:
    kwargs = {**CALLS[call], "return_tensors": return_tensors}
    mine, reference = ours(**kwargs), without_token_types(theirs(**kwargs))
    assert list(mine) == list(reference) == ["input_ids", "attention_mask"]
    for key in mine:
        expected = reference[key]
        if return_tensors is None:
            assert mine[key] == expected, key
        else:
            assert type(mine[key]) is type(expected) and mine[key].dtype == expected.dtype, key
            assert mine[key].tolist() == expected.tolist(), key


def test_images_and_text_match_transformers(ours: GitProcessor, theirs: Any) -> None:
    text = ["a cat on a mat", "two dogs"]
    mine = ours(images=images(), text=text, padding=True, return_tensors="pt")
    reference = theirs(images=images(), text=text, padding=True, return_tensors="pt")
    assert list(mine) == [k for k in reference if k != "token_type_ids"]
    assert torch.equal(mine.input_ids, reference["input_ids"])
    assert torch.equal(mine.attention_mask, reference["attention_mask"])
    torch.testing.assert_close(mine.pixel_values, reference["pixel_values"], rtol=0, atol=1e-5)
    alone = ours(images=images()[0])  # return_tensors defaults to "pt": GIT takes tensors
    assert list(alone) == ["pixel_values"] and alone.pixel_values.shape == (1, 3, 32, 32)
    listed = ours(images=images(), return_tensors=None).pixel_values
    assert len(listed) == 3 and all(torch.equal(a, b) for a, b in zip(listed, mine.pixel_values))


def test_the_inputs_go_straight_into_the_model(ours: GitProcessor) -> None:
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(vocab_size=ours.tokenizer.vocab_size)).eval()
    inputs = ours(images=images()[:2], text=["a cat", "a dog on the grass"], padding=True).to("cpu")
    with torch.no_grad():
        logits = model(**inputs)
    assert logits.shape == (*inputs.input_ids.shape, ours.tokenizer.vocab_size)


def test_decode_save_and_errors(ours: GitProcessor, tmp_path: Path) -> None:
    ids = ours(text="a cat").input_ids[0]
    assert not hasattr(ours(text="a cat"), "pixel_values")  # the keys read as attributes, and only they
    assert ours.decode(ids) == "a cat" and ours.batch_decode(ours(text=["a", "the dog"], padding=True).input_ids) == [
        "a", "the dog"]
    ours.save_pretrained(tmp_path)
    again = GitProcessor.from_pretrained(tmp_path)
    assert again.image_processor == ours.image_processor
    assert torch.equal(again(text=TEXTS[:10], padding=True).input_ids, ours(text=TEXTS[:10], padding=True).input_ids)
    for kwargs, needle in [({}, "neither images nor text"), ({"text": "a", "return_tensors": "tf"}, "'tf'"),
                           ({"text": ["a", "the dog"]}, "pass padding=True"), ({"text": 3}, "text is int"),
                           ({"images": None, "text": [None]}, "text[0]"), ({"images": [3]}, "images[0] is int 3")]:
        with pytest.raises(ValueError) as error:
            ours(**kwargs)
        assert needle in str(error.value) and "\n" not in str(error.value), (kwargs, str(error.value))
