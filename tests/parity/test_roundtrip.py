"""Checkpoints travel both ways: what we save, transformers loads, and back again unchanged."""

from __future__ import annotations

import pytest
import torch

from git_scratch import GIT, GitConfig
from git_scratch.checkpoints.hub import config_to_hf
from tests.conftest import hf_tiny, save_hf, tiny_config

pytestmark = pytest.mark.parity
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("overrides", [{}, {"n_frames": 2}, {"tie_embeddings": True}])
def test_ours_to_transformers_same_logits(overrides, tmp_path) -> None:
    torch.manual_seed(0)
    ours = GIT.from_config(tiny_config(**overrides)).eval()
    frames = overrides.get("n_frames")
    if frames:  # our init leaves them at zero like HF's; make them count
        with torch.no_grad():
            ours.vision.frame_embed.normal_()
    ours.save_pretrained(tmp_path / "ck")
    hf = transformers.GitForCausalLM.from_pretrained(tmp_path / "ck").eval()
    pixel_values = torch.randn((2, frames, 3, 32, 32) if frames else (2, 3, 32, 32))
    input_ids = torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        theirs = hf(pixel_values=pixel_values, input_ids=input_ids).logits[:, -6:]
        torch.testing.assert_close(ours(pixel_values, input_ids), theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", [{}, {"num_image_with_embedding": 2}, {"tie_word_embeddings": True}])
def test_transformers_to_ours_to_ours_identical(overrides, tmp_path) -> None:
    torch.manual_seed(0)
    first = GIT.from_pretrained(save_hf(hf_tiny(**overrides), tmp_path / "hf"))
    first.save_pretrained(tmp_path / "ours")
    second = GIT.from_pretrained(tmp_path / "ours")
    assert second.cfg == first.cfg
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if first.cfg.tie_embeddings:
        assert second.lm_head.weight is second.embed.word.weight


@pytest.mark.parametrize("preset", ["git-base", "git-large", "git-base-vatex", "git-large-msrvtt-qa"])
def test_parameter_count_equals_transformers(preset: str) -> None:
    cfg = GitConfig.from_name(preset)
    with torch.device("meta"):
        ours = GIT.from_config(cfg)
        hf = transformers.GitForCausalLM(transformers.GitConfig(**config_to_hf(cfg)))
    count = lambda m: sum(p.numel() for p in m.parameters())  # parameters() counts a tied tensor once
    assert count(ours) == count(hf)
    assert count(ours) > 100_000_000  # the real shapes, not a tiny stand-in
