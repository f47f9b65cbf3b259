"""Attention capture changes nothing, obeys the mask, and draws one panel per generated token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT
from git_scratch.cli import main
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.model.mask import git_attention_mask
from git_scratch.tools.attention import attention_maps, capturing, rollout
from tests.conftest import tiny_config

WORDS = [f"w{i}" for i in range(95)]  # word_level ids 4..98; [PAD] 0, [CLS] 2, [SEP] 3


@pytest.fixture(scope="module")
def model() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config(bos_id=2, eos_id=3)).eval()


def test_capture_changes_neither_logits_nor_tokens(model: GIT) -> None:
    """The probabilities are computed beside SDPA, not instead of it (model/decoder.py), so the
    logits are bit-identical and generated tokens identical."""
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(4, 99, (2, 6))
    with torch.no_grad():
        plain = model(pixel_values, input_ids)
        with capturing(model) as sinks:
            captured = model(pixel_values, input_ids)
    assert all(len(sink) == 1 for sink in sinks)
    assert torch.equal(captured, plain)
    for kwargs in ({}, {"num_beams": 3}):
        expected = model.generate(pixel_values, max_new_tokens=8, **kwargs)
        with capturing(model) as sinks:
            assert torch.equal(model.generate(pixel_values, max_new_tokens=8, **kwargs), expected)
        assert sinks[0]  # the cached path went through the capture too
    assert all(block.attn.weights is None for block in model.blocks)  # SDPA again afterwards


def test_probabilities_obey_the_mask(model: GIT) -> None:
    pixel_values, input_ids = torch.randn(1, 3, 32, 32), torch.randint(4, 99, (1, 5))
    with torch.no_grad(), capturing(model) as sinks:
        model(pixel_values, input_ids)
    probs = sinks[-1][0]  # (1, H, S, S)
    mask = git_attention_mask(17, torch.ones(1, 5, dtype=torch.bool))  # 16 patches + CLS
    assert probs.shape == (1, 4, 22, 22)
    assert (probs.masked_select(~mask.expand_as(probs)) == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4, 22))


def test_rollout_keeps_the_mask_and_sums_to_one() -> None:
    n_image, n_text = 3, 4
    mask = git_attention_mask(n_image, torch.ones(1, n_text, dtype=torch.bool))[0, 0]
    attn = torch.rand(2, 7, 7).masked_fill(~mask, 0)
    attn = attn / attn.sum(-1, keepdim=True)  # (L, S, S) row-stochastic under the mask
    result = rollout(attn)
    torch.testing.assert_close(result.sum(-1), torch.ones(7))
    assert (result[:n_image, n_image:] == 0).all()  # image rows never reach text
    assert (result.triu(1)[n_image:, n_image:] == 0).all()  # text stays causal
    torch.testing.assert_close(rollout(attn[:1]), (attn[0] + torch.eye(7)) / 2)


def test_maps_are_the_rows_that_chose_each_token(model: GIT) -> None:
    pixel_values, prompt = torch.randn(1, 3, 32, 32), torch.tensor([[2]])
    result = attention_maps(model, pixel_values, prompt, max_new_tokens=5, layers=[0, 1])
    k = len(result.tokens)
    assert result.maps.shape == (2, k, 4, 4) and result.rows == ["layer 0", "layer 1"]
    text = torch.cat([prompt, torch.tensor([result.tokens])], dim=1)
    with torch.no_grad(), capturing(model) as sinks:
        model(pixel_values, text)
    layer1 = sinks[1][0][0].mean(0)  # (S, S)
    last = 17 + k - 1  # the row of the last generated token's predecessor
    torch.testing.assert_close(result.maps[1, -1].flatten(), layer1[last, 1:17])
    torch.testing.assert_close(result.image_share[1, -1], layer1[last, 1:17].sum())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: GIT) -> Path:
    path = tmp_path_factory.mktemp("attention") / "ck"
    model.save_pretrained(path)
    GitTokenizer.word_level(WORDS).save_pretrained(path)
    ImageProcessor(size=32, crop_size=32).save_pretrained(path)
    return path


def test_command_draws_every_mode_from_an_odd_sized_image(checkpoint: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 31, 3), dtype=np.uint8)).save(image)
    for flags in ([], ["--layer", "all"], ["--rollout"], ["--layer", "0", "--text", "w5 w6"]):
        out = tmp_path / f"attention{len(flags)}.png"
        assert main(["attention", str(checkpoint), str(image), "-o", str(out), "--max-new-tokens", "4", *flags]) == 0
        assert Image.open(out).size[0] > 300
        assert capsys.readouterr().out.startswith(f"{out}\t")
    assert main(["attention", str(checkpoint), str(image), "-o", str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    for flags in (["--layer", "2"], ["--layer", "-1"], ["--layer", "0", "--rollout"]):
        assert main(["attention", str(checkpoint), str(image), "-o", str(tmp_path / "x.png"), *flags]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_one_head_and_one_frame_are_the_captured_probabilities(model: GIT) -> None:
    """head=h is that head's row of the capture pass, not the mean; the mean is unchanged by the
    option; a video's frame f maps frame f's own patches, after its own CLS."""
    pixel_values, prompt = torch.randn(1, 3, 32, 32), torch.tensor([[2]])
    mean = attention_maps(model, pixel_values, prompt, max_new_tokens=4, layers=[1])
    head = attention_maps(model, pixel_values, prompt, max_new_tokens=4, layers=[1], head=2)
    assert head.rows == ["layer 1, head 2"] and head.tokens == mean.tokens
    with torch.no_grad(), capturing(model) as sinks:
        model(pixel_values, torch.cat([prompt, torch.tensor([mean.tokens])], dim=1))
    probs = sinks[1][0][0]  # (H, S, S)
    last = 17 + len(mean.tokens) - 1
    assert torch.equal(head.maps[0, -1].flatten(), probs[2, last, 1:17])
    assert torch.equal(mean.maps[0, -1].flatten(), probs.mean(0)[last, 1:17])
    assert not torch.equal(head.maps, mean.maps)
    with pytest.raises(ValueError, match="head 4"):
        attention_maps(model, pixel_values, prompt, layers=[1], head=4)
    with pytest.raises(ValueError, match="rollout"):
        attention_maps(model, pixel_values, prompt, use_rollout=True, head=0)

    torch.manual_seed(0)
    video_model = GIT.from_config(tiny_config(bos_id=2, eos_id=3, n_frames=2)).eval()
    clip = torch.randn(1, 2, 3, 32, 32)
    frames = [attention_maps(video_model, clip, prompt, max_new_tokens=3, frame=f) for f in (0, 1)]
    with torch.no_grad(), capturing(video_model) as sinks:
        video_model(clip, torch.cat([prompt, torch.tensor([frames[0].tokens])], dim=1))
    probs = sinks[-1][0][0].mean(0)  # (S, S): 2 frames of 17 tokens, then the text
    last = 34 + len(frames[0].tokens) - 1
    for f, result in enumerate(frames):
        assert result.maps.shape == (1, len(result.tokens), 4, 4)
        assert torch.equal(result.maps[0, -1].flatten(), probs[last, 17 * f + 1:17 * f + 17])
