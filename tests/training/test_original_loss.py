"""The original's SmoothLabelCrossEntropyLoss as a training option, against the original code's own numbers.

tests/original/fixtures/loss_smooth.json holds the original loss function's value and gradient on
seeded logits; checkpoint_tiny.json the original model's training loss on its logits (made by
scripts/original_reference.py, see scripts/original_reference.md).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from git_scratch.data.manifest import IGNORE, ManifestDataset, collate, read_manifest
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.training.loop import TrainConfig, train
from git_scratch.training.loss import original_smooth_loss, token_loss
from tests.checkpoints.test_original import TINY, save_original, tiny_config
from tests.checkpoints.test_original import inputs as tiny_inputs
from tests.training.test_train import make_data, small_model

FIXTURES = Path(__file__).resolve().parents[1] / "original" / "fixtures"
LOSS = json.loads((FIXTURES / "loss_smooth.json").read_text())


def test_value_and_gradient_equal_the_originals() -> None:
    logits = torch.tensor(LOSS["logits"], requires_grad=True)  # (N, V)
    target = torch.tensor(LOSS["target"])
    labels = target.masked_fill(target == LOSS["ignore_index"], IGNORE)  # the original ignores padding, id 0
    kept = int((labels != IGNORE).sum())
    loss = original_smooth_loss(logits, labels, eps=LOSS["eps"]) / kept  # the original reports the mean
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(LOSS["loss"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits.grad, torch.tensor(LOSS["grad"]), atol=1e-5, rtol=0)


def test_it_is_not_torchs_label_smoothing() -> None:
    """Same eps, other numbers: torch spreads eps / V over every class and reports a cross-entropy."""
    logits, target = torch.tensor(LOSS["logits"]), torch.tensor(LOSS["target"])
    labels = target.masked_fill(target == 0, IGNORE)
    torchs = F.cross_entropy(logits, labels, ignore_index=IGNORE, label_smoothing=0.1, reduction="sum")
    assert abs(torchs.item() - original_smooth_loss(logits, labels).item()) > 1.0


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_original_models_training_loss(name: str, tmp_path: Path) -> None:
    """Our model on converted weights and our loss on our labels give the original model's training loss:
    on every position, and with need_predict (the original's labels mask) as our IGNORE."""
    from git_scratch.checkpoints.original import load_original

    case = TINY[name]
    model = load_original(save_original(case, tmp_path / "model.pt"), config=tiny_config(case["sizes"]), fast=False)
    pixels, ids = tiny_inputs(case)
    with torch.no_grad():
        logits = model(pixels, ids)  # (B, T, V)
    for predict, expected in (([[0] + [1] * (ids.shape[1] - 1)] * len(ids), case["loss_all"]),
                              (case["need_predict"], case["loss_need_predict"])):
        labels = ids.masked_fill(torch.tensor(predict) == 0, IGNORE)  # (B, T)
        shifted = labels[:, 1:].flatten()
        loss = token_loss(logits[:, :-1].flatten(0, 1), shifted, "original_smooth") / (shifted != IGNORE).sum()
        assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_train_with_the_original_loss_reports_it(tmp_path: Path) -> None:
    """One step over the whole set: the loss logged is the smoothed KL of the model before the step."""
    manifest, tok_dir = make_data(tmp_path, n=4)
    tokenizer = GitTokenizer.from_pretrained(tok_dir)
    processor = ImageProcessor(size=32, crop_size=32)
    model = small_model(tokenizer)
    before = copy.deepcopy(model).eval()
    cfg = TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "run"), steps=1, batch_size=4,
                      warmup_steps=0, loss="original_smooth")
    summary = train(cfg, model=model, tokenizer=tokenizer, processor=processor)
    batch = collate([item for item in ManifestDataset(read_manifest(manifest), processor, tokenizer, pack=True)], 0)
    with torch.no_grad():
        logits = before(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                        segment_ids=batch.get("segment_ids"))
    labels = batch["labels"][:, 1:].flatten()
    expected = token_loss(logits[:, :-1].flatten(0, 1), labels, "original_smooth") / (labels != IGNORE).sum()
    plain = token_loss(logits[:, :-1].flatten(0, 1), labels) / (labels != IGNORE).sum()
    assert summary["final_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert abs(expected.item() - plain.item()) > 0.1  # the check tells the two losses apart


@pytest.mark.parametrize(("change", "needle"), [
    ({"loss": "focal"}, "loss = 'focal' is not one of cross_entropy, original_smooth"),
    ({"loss": "original_smooth", "label_smoothing": 0.1}, "which smooths by its own eps 0.1"),
    ({"max_text_len": 2}, "max_text_len = 2 must be an integer >= 3 or null; use 40"),
    ({"max_text_len": "40"}, "max_text_len = '40' must be an integer >= 3 or null"),
])
def test_bad_settings_are_one_line(change: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(train_manifest="x.jsonl", **change)
    assert needle in str(info.value)
