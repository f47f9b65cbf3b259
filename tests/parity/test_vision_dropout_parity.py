"""vision_config.attention_dropout: a training-time setting that checkpoints may carry. We load it,
apply it to the ViT's attention in training only, and write it back where transformers reads it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from git_scratch import GIT
from tests.conftest import hf_tiny, save_hf, tiny_config

pytestmark = pytest.mark.parity
transformers = pytest.importorskip("transformers")


def test_vision_attention_dropout_loads_and_eval_logits_equal_transformers(tmp_path) -> None:
    torch.manual_seed(7)
    hf = hf_tiny(vision_config={"attention_dropout": 0.1})
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    assert ours.cfg.vision.attn_dropout == 0.1
    assert all(block.attn.dropout == 0.1 for block in ours.vision.vit.transformer.resblocks)
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        theirs = hf.eval()(pixel_values=pixel_values, input_ids=input_ids).logits[:, -6:]
        logits = ours.eval()(pixel_values, input_ids)
    torch.testing.assert_close(logits, theirs, atol=1e-5, rtol=0)


def test_vision_attention_dropout_round_trips_through_config_json(tmp_path) -> None:
    cfg = tiny_config()
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, attn_dropout=0.1))
    GIT.from_config(cfg).save_pretrained(tmp_path / "ck")
    written = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert written["vision_config"]["attention_dropout"] == 0.1
    assert transformers.GitConfig.from_pretrained(tmp_path / "ck").vision_config.attention_dropout == 0.1
    back = GIT.from_pretrained(tmp_path / "ck")
    assert back.cfg == cfg
    assert back.vision.vit.transformer.resblocks[0].attn.dropout == 0.1
