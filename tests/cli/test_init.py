"""`git-scratch init`: a random checkpoint written offline, which caption, vqa, info and convert
read like a downloaded one, with a character-level WordPiece vocabulary at BERT's special ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from git_scratch import GitConfig
from git_scratch.cli.init import character_vocabulary
from git_scratch.data.tokenizer import GitTokenizer
from tests.conftest import tiny_config
from tests.hardening.support import error_line, run_cli

TEXT = "A Dog, 2 cats & one café!"


def test_git_base_vocabulary_has_berts_special_ids_and_encodes_english(tmp_path: Path) -> None:
    cfg = GitConfig.from_name("git-base")
    vocab = character_vocabulary(cfg, "git-base")
    assert len(vocab) == cfg.vocab_size == 30522 and len(set(vocab)) == len(vocab)
    assert {i: vocab[i] for i in (0, 100, 101, 102, 103)} == {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]",
                                                              103: "[MASK]"}
    assert vocab[-1] == f"[unused{cfg.vocab_size - 5 - 36 - 32 - 36 - 1}]"
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token in vocab))
    from_vocab = GitTokenizer.from_pretrained(tmp_path)
    from_vocab.save_pretrained(tmp_path / "saved")  # tokenizer.json, as init writes it
    tokenizer = GitTokenizer.from_pretrained(tmp_path / "saved")
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 101, 102, 100)
    assert tokenizer.vocab_size == cfg.vocab_size
    ids = tokenizer.encode(TEXT)
    assert ids == from_vocab.encode(TEXT) and tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == "a dog, 2 cats & one cafe!"  # lowercased, accents stripped: BERT uncased


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    """A tiny config JSON with BERT's ids, as --preset accepts one."""
    path = tmp_path / "tiny.json"
    tiny_config(vocab_size=200, pad_id=0, bos_id=101, eos_id=102).save(path)
    return path


def test_init_then_caption_vqa_info_convert(preset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    run = run_cli("init", "--preset", preset, out, "--seed", "3")
    assert run.code == 0 and run.out.count("\n") == 1, run.err
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json"} == {p.name for p in out.iterdir()}
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(image)
    run = run_cli("caption", out, image, "--max-new-tokens", "4")
    assert run.code == 0 and run.out.startswith(f"{image}\t") and run.out.count("\n") == 1, run.err
    run = run_cli("vqa", out, image, "-q", "what is it?", "--max-new-tokens", "4")
    assert run.code == 0 and run.out.startswith("what is it?\t") and run.out.count("\n") == 1, run.err
    run = run_cli("info", out)
    assert run.code == 0 and "vocab 200" in run.out and "bos 101, eos 102, pad 0" in run.out, run.err
    assert run_cli("convert", out, tmp_path / "converted").code == 0


def test_init_refuses_an_existing_dir_and_seeds_the_weights(preset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    assert run_cli("init", "--preset", preset, out).code == 0
    first = load_file(out / "model.safetensors")
    error_line(run_cli("init", "--preset", preset, out, "--seed", "1"), "already exists", "--force")
    assert run_cli("init", "--preset", preset, out, "--seed", "1", "--force").code == 0
    second = load_file(out / "model.safetensors")
    assert first.keys() == second.keys() and not all((first[k] == second[k]).all() for k in first)


def test_init_refuses_a_vocabulary_too_small_for_characters(tmp_path: Path) -> None:
    tiny_config().save(tmp_path / "small.json")  # vocab_size 99
    error_line(run_cli("init", "--preset", tmp_path / "small.json", tmp_path / "ckpt"), "vocab_size 99", ">= 109")
    assert not (tmp_path / "ckpt").exists()
