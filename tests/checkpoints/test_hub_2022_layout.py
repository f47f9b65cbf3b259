"""The 2022-2023 hub layout (transformers ~4.26): pytorch_model.bin with int64 position_ids
buffers, the conversion bot's model.safetensors beside it or alone, that era's config.json and
tokenizer files. Each loads through git_scratch.load into exactly the tensors it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import git_scratch
from git_scratch import GitTokenizer
from git_scratch.checkpoints.hub import to_hf_state_dict
from tests.checkpoints.hub_2022 import WEIGHTS, Weights, era_state_dict, write_2022_layout
from tests.conftest import hf_tiny


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(0)
    return hf_tiny()


@pytest.mark.parametrize("weights", WEIGHTS)
def test_each_weight_layout_loads_the_tensors_it_holds(hf, weights: Weights, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / weights, weights)
    model = git_scratch.load(directory, fast=False)
    ours = to_hf_state_dict(model.state_dict(), model.cfg)
    theirs = era_state_dict(hf)
    assert set(theirs) - set(ours) == {"git.embeddings.position_ids",
                                       "git.image_encoder.vision_model.embeddings.position_ids"}
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_era_config_reads_as_the_model_it_describes(hf, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / "ckpt", "bin")
    cfg = git_scratch.load(directory, fast=False).cfg
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_ff, cfg.max_positions) == (99, 48, 2, 4, 64, 64)
    assert (cfg.n_frames, cfg.tie_embeddings, cfg.bos_id, cfg.eos_id, cfg.pad_id) == (None, False, 1, 2, 0)
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.d_model, cfg.vision.d_ff) == (32, 8, 32, 37)
    assert cfg.dropout == 0.1 and cfg.attn_dropout == 0.1  # the era's BERT dropouts, written out


def test_the_bots_safetensors_holds_int64_buffers(hf, tmp_path: Path) -> None:
    """The layout is what the bot wrote: format "pt", the buffers as I64 beside F32 weights."""
    directory = write_2022_layout(hf, tmp_path / "ckpt", "both")
    with safe_open(directory / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.get_slice("git.embeddings.position_ids").get_dtype() == "I64"
        assert f.get_slice("git.embeddings.word_embeddings.weight").get_dtype() == "F32"
    assert json.loads((directory / "config.json").read_text())["vision_config"]["model_type"] == "git_vision_model"


def test_era_tokenizer_files_load(hf, tmp_path: Path) -> None:
    directory = write_2022_layout(hf, tmp_path / "ckpt", "bin")
    tokenizer = GitTokenizer.from_pretrained(directory)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 0)
    assert tokenizer.model_max_length == 512
    assert tokenizer.encode("A Cat sitting") == [5, 8, 17]  # lowercased, as do_lower_case says


def test_safetensors_wins_over_the_bin_beside_it(hf, tmp_path: Path) -> None:
    """As in transformers: with both files the bot's model.safetensors is read, the .bin never is."""
    directory = write_2022_layout(hf, tmp_path / "ckpt", "both")
    (directory / "pytorch_model.bin").write_bytes(b"not a pickle")
    model = git_scratch.load(directory, fast=False)
    torch.testing.assert_close(model.embed.word.weight, hf.git.embeddings.word_embeddings.weight, rtol=0, atol=0)
