"""The commands on a variant directory (checkpoints/variant.py): caption, vqa, eval and
train --init read it through the same loader as the hub layout, and train writes variants back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import git_scratch
from git_scratch import save_variant
from git_scratch.data.processor import ImageProcessor, load_image
from git_scratch.data.tokenizer import GitTokenizer
from tests.checkpoints.variant_models import GatedGIT
from tests.conftest import tiny_config
from tests.hardening.support import WORDS, error_line, run_cli

BUILDER = "tests.checkpoints.variant_models:build"


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A gated tiny GIT with a word-level tokenizer ([PAD] 0, [CLS] 2, [SEP] 3), an image, a manifest."""
    root = tmp_path_factory.mktemp("variant")
    torch.manual_seed(0)
    model = GatedGIT(tiny_config(pad_id=0, bos_id=2, eos_id=3, dropout=0.0, attn_dropout=0.0))
    tokenizer, processor = GitTokenizer.word_level(WORDS), ImageProcessor(size=32, crop_size=32)
    save_variant(model, root / "v", BUILDER, tokenizer=tokenizer, processor=processor)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"{i}.png")
        lines.append({"image": f"{i}.png", "caption": f"w{i} w{i + 1}"})
    (root / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"dir": root / "v", "image": root / "0.png", "manifest": root / "m.jsonl"}


def test_caption_and_vqa_a_variant_equal_the_library(variant: dict[str, Path]) -> None:
    model = git_scratch.load(variant["dir"])
    tokenizer = GitTokenizer.from_pretrained(variant["dir"])
    pixel_values = ImageProcessor(size=32, crop_size=32).preprocess(load_image(variant["image"], 32))[None]
    caption = model.generate(pixel_values, max_new_tokens=5)[0, 1:].tolist()  # after the [CLS] prompt
    caption = caption[:caption.index(tokenizer.eos_id)] if tokenizer.eos_id in caption else caption
    run = run_cli("caption", variant["dir"], variant["image"], "--max-new-tokens", "5")
    assert run.code == 0, run.err
    assert run.out == f"{variant['image']}\t{tokenizer.decode(caption).strip()}\n"
    run = run_cli("vqa", variant["dir"], variant["image"], "-q", "w7 w8", "--max-new-tokens", "3")
    assert run.code == 0 and run.out.startswith("w7 w8\t") and run.out.count("\n") == 1, run.err


def test_eval_a_variant(variant: dict[str, Path]) -> None:
    run = run_cli("eval", variant["dir"], variant["manifest"], "--max-new-tokens", "3", "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["n_captions"] == 4


def test_train_init_from_a_variant_then_resume(variant: dict[str, Path], tmp_path: Path) -> None:
    """Two steps from the CLI, a checkpoint after each; with the last one lost, --resume redoes it
    from the first. Both checkpoints are variants of the same builder, and the final model loads
    as the changed class."""
    common = ["train", "--init", variant["dir"], "--train-manifest", variant["manifest"], "--out-dir",
              tmp_path / "run", "--batch-size", "2", "--warmup-steps", "0", "--lr", "1e-2", "--steps", "2",
              "--save-every", "1"]
    run = run_cli(*common)
    assert run.code == 0, run.err
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-0000002")
    run = run_cli(*common, "--resume")
    assert run.code == 0, run.err
    for step in ("step-0000001", "step-0000002"):
        spec = json.loads((tmp_path / "run" / "checkpoints" / step / "variant.json").read_text())
        assert spec["builder"] == BUILDER
    trained = git_scratch.load(tmp_path / "run" / "model")
    assert type(trained) is GatedGIT
    start = git_scratch.load(variant["dir"])
    assert not torch.equal(trained.image_gate, start.image_gate)  # the variant's own tensor was trained
    run = run_cli("caption", tmp_path / "run" / "model", variant["image"], "--max-new-tokens", "3")
    assert run.code == 0 and run.out.count("\n") == 1, run.err


def test_a_variant_whose_builder_is_missing_is_one_line(variant: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in variant["dir"].iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    spec = json.loads((broken / "variant.json").read_text())
    (broken / "variant.json").write_text(json.dumps({**spec, "builder": "my_missing_pkg.models:build"}))
    error_line(run_cli("caption", broken, variant["image"]), "my_missing_pkg", "PYTHONPATH")


def test_info_counts_the_variants_own_parameters(variant: dict[str, Path]) -> None:
    """info read only config.json, which a variant directory does not have."""
    run = run_cli("info", variant["dir"])
    assert run.code == 0, run.err
    assert f"built by {BUILDER}" in run.out
    total = int(next(line for line in run.out.splitlines() if line.strip().startswith("total")).split()[1].replace(",", ""))
    model = git_scratch.load(variant["dir"])
    assert total == sum(p.numel() for p in model.parameters())  # the gate and the final norm counted
