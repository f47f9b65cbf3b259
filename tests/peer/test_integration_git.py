"""GitModelIntegrationTest re-written on random weights. Upstream downloads microsoft/git-base
(-coco, -textvqa) and the COCO cats picture and checks hard-coded logits and captions; here a
random-weight model at the tester's sizes, with a WordPiece vocabulary of our test tokenizer's
(tests/data/test_tokenizer.py) and git-base's image processor settings at 32 px, and a random
640 x 480 picture, run through transformers and through git_scratch, which must agree."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import git_scratch
from git_scratch import GIT, GitProcessor
from tests.data.test_tokenizer import VOCAB as WORDPIECES
from tests.data.test_tokenizer import write_vocab
from tests.peer.conftest import IMAGE_SIZE, PATCH, hf_model

pytestmark = pytest.mark.parity
transformers = pytest.importorskip("transformers")

# microsoft/git-base's preprocessor_config.json, at the tester's 32 px.
PREPROCESSOR = {
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "size": {"shortest_edge": IMAGE_SIZE},
    "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "processor_class": "GitProcessor", "resample": 3,
    "rescale_factor": 0.00392156862745098,
}


def checkpoint_with_processor(tmp_path: Path) -> tuple[Any, GIT, GitProcessor, Image.Image]:
    """(transformers model, ours, our processor, picture) from one directory at tmp_path / "ck" holding
    what a hub checkpoint holds: config, weights, tokenizer files, preprocessor config. Special ids
    are git-base's roles: bos [CLS], eos [SEP], pad [PAD]."""
    directory = write_vocab(tmp_path / "ck")
    transformers.BertTokenizer.from_pretrained(directory, do_lower_case=True).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    ids = {w: i for i, w in enumerate(WORDPIECES)}
    hf = hf_model(1, vocab_size=len(WORDPIECES), bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
                  pad_token_id=ids["[PAD]"], initializer_range=0.2)  # far from uniform, so captions vary
    hf.save_pretrained(directory)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    return hf, git_scratch.load(directory), GitProcessor.from_pretrained(directory), image


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, GIT, GitProcessor, Image.Image, Any]:
    tmp = tmp_path_factory.mktemp("integration")
    hf, ours, processor, image = checkpoint_with_processor(tmp)
    hf.name_or_path = str(tmp / "ck")  # where test_inference_interpolate_pos_encoding finds the files
    return hf, ours, processor, image, transformers.GitProcessor.from_pretrained(tmp / "ck")


def test_forward_pass(setup) -> None:
    """processor(images=image, text="hello world") -> model(**inputs): logits of (1, N + T, V) in
    transformers, our text positions equal to upstream's 1e-4."""
    hf, ours, processor, image, theirs_processor = setup
    inputs = processor(images=image, text="hello world")
    reference = theirs_processor(images=image, text="hello world", return_tensors="pt")
    assert torch.equal(inputs.input_ids, reference.input_ids)
    with torch.no_grad():
        theirs = hf(**reference).logits
        mine = ours(**inputs)
    n_image = (IMAGE_SIZE // PATCH) ** 2 + 1
    assert theirs.shape == (1, n_image + inputs.input_ids.shape[1], len(WORDPIECES))
    torch.testing.assert_close(mine, theirs[:, n_image:], rtol=1e-4, atol=1e-4)


def test_inference_image_captioning(setup) -> None:
    """generate(pixel_values, max_length=20, output_scores=True, return_dict_in_generate=True):
    the same ids, the same decoded caption, and the last step's scores within upstream's 1e-4."""
    hf, ours, processor, image, theirs_processor = setup
    pixel_values = processor(images=image).pixel_values
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, max_length=20, output_scores=True,
                             return_dict_in_generate=True)
    mine = git_scratch.generate(ours, pixel_values, max_new_tokens=19, output_scores=True,
                                return_dict_in_generate=True)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert mine.scores[-1].shape == (1, len(WORDPIECES))
    torch.testing.assert_close(mine.scores[-1], theirs.scores[-1], rtol=1e-4, atol=1e-4)
    caption = processor.batch_decode(mine.sequences)
    assert caption == theirs_processor.batch_decode(theirs.sequences, skip_special_tokens=True)
    assert caption[0]  # a random model still says something


def test_visual_question_answering(setup) -> None:
    """[CLS] + the question's ids without specials as the prompt, max_length 20: the same ids and
    the same decoded text (question included, as upstream decodes it)."""
    hf, ours, processor, image, theirs_processor = setup
    question = "what does the front of the bus say at the top?"
    pixel_values = processor(images=image).pixel_values
    asked = processor(text=question, add_special_tokens=False).input_ids
    input_ids = torch.cat([torch.tensor([[processor.tokenizer.bos_id]]), asked], 1)
    expected = [theirs_processor.tokenizer.cls_token_id] + theirs_processor(text=question,
                                                                          add_special_tokens=False).input_ids
    assert input_ids[0].tolist() == expected
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, input_ids=input_ids, max_length=20)
    mine = git_scratch.generate(ours, pixel_values, input_ids, max_new_tokens=20 - input_ids.shape[1])
    assert torch.equal(mine, theirs)
    answer = processor.batch_decode(mine)
    assert answer == theirs_processor.batch_decode(theirs, skip_special_tokens=True)
    assert answer[0].startswith("what does the front of the bus say at the top?")


def test_batched_generation(setup) -> None:
    """Two copies of one picture, each with the prompt [bos], max_length 50: two equal captions,
    equal to transformers'."""
    hf, ours, processor, image, theirs_processor = setup
    pixel_values = processor(images=[image, image]).pixel_values
    input_ids = torch.full((2, 1), ours.cfg.bos_id)
    with torch.no_grad():
        theirs = hf.generate(pixel_values=pixel_values, input_ids=input_ids, max_length=50)
    mine = git_scratch.generate(ours, pixel_values, input_ids, max_new_tokens=49)
    assert torch.equal(mine, theirs)
    captions = processor.batch_decode(mine)
    assert captions[0] == captions[1]
    assert captions == theirs_processor.batch_decode(theirs, skip_special_tokens=True)


def test_inference_interpolate_pos_encoding(setup) -> None:
    """A processor asked for 48 px on a 32 px model: transformers' GitModel refuses it unless
    interpolate_pos_encoding=True, then its last hidden state has (48/16)^2 + 1 image tokens; ours
    interpolates on its own (no switch) and equals it. Upstream used 180 px on git-base."""
    hf, ours, _, image, _ = setup
    size = 48
    # Our processor reads its size from the file only; the caller's 48 px is a changed copy.
    base = GitProcessor.from_pretrained(hf.name_or_path)
    processor = GitProcessor(replace(base.image_processor, size=size, crop_size=size), base.tokenizer)
    theirs_processor = transformers.GitProcessor.from_pretrained(
        hf.name_or_path, size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    inputs = processor(text="what's in the image", images=image)
    reference = theirs_processor(text="what's in the image", images=image, return_tensors="pt")
    torch.testing.assert_close(inputs.pixel_values, reference.pixel_values, atol=1e-5, rtol=0)
    with pytest.raises(ValueError), torch.no_grad():
        hf.git(**reference, interpolate_pos_encoding=False)
    seen: dict[str, torch.Tensor] = {}
    handle = ours.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    try:
        with torch.no_grad():
            theirs = hf.git(**reference, interpolate_pos_encoding=True).last_hidden_state
            ours(**inputs)
    finally:
        handle.remove()
    assert theirs.shape == (1, (size // PATCH) ** 2 + 1 + inputs.input_ids.shape[1], 32)
    torch.testing.assert_close(seen["x"], theirs, rtol=1e-4, atol=1e-4)
