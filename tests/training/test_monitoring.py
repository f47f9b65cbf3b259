"""Watching a run: held-out evaluation that leaves the trajectory alone, TensorBoard scalars,
and the warning about targets the tokenizer mostly does not know."""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import pytest
import torch

from git_scratch.training import loop, monitor
from tests.training.test_train import make_data, params, run


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_evaluation_during_training_changes_nothing_and_is_logged(data, tmp_path: Path, monkeypatch) -> None:
    manifest, _ = data
    plain = run(data, tmp_path / "plain")
    evaluate = monitor.evaluate

    def evaluate_drawing_randoms(*args, **kwargs):
        # an evaluation that draws from both global RNGs (sampling would): training must not notice
        torch.rand(3), random.random()
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(monitor, "evaluate", evaluate_drawing_randoms)
    evaluated = run(data, tmp_path / "eval", eval_manifest=str(manifest), eval_every=4)
    a, b = params(plain["model"]), params(evaluated["model"])
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)
    assert evaluated["final_loss"] == plain["final_loss"]
    logged = rows(tmp_path / "eval")
    assert [r["step"] for r in logged if "eval/vqa_accuracy" in r] == [4, 6]  # every 4 steps, and the last
    last = logged[-1]
    assert last["eval/n_captions"] == 16 and last["eval/n_questions"] == 16
    assert 0 <= last["eval/caption_exact_match"] <= 1
    assert evaluated["eval"] == {k: v for k, v in last.items() if k.startswith("eval/")}
    assert not any(k.startswith("eval/") for r in rows(tmp_path / "plain") for k in r)


def test_eval_every_without_a_manifest_is_refused() -> None:
    with pytest.raises(ValueError, match="eval_every = 5 but no eval_manifest; pass --eval-manifest"):
        loop.TrainConfig(eval_every=5)


def test_tensorboard_holds_the_loss_of_each_logged_step(data, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(data, tmp_path / "run", steps=3, tensorboard=True)
    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    assert {"loss", "lr", "grad_norm"} <= set(board.Tags()["scalars"])
    losses = [(event.step, event.value) for event in board.Scalars("loss")]
    expected = [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows(tmp_path / "run")]
    assert losses == expected and [step for step, _ in losses] == [1, 2, 3]


def test_tensorboard_missing_fails_in_one_line_before_training(data, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an absent package looks like
    with pytest.raises(ValueError) as refused:
        run(data, tmp_path / "run", tensorboard=True)
    assert "\n" not in str(refused.value)
    assert str(refused.value).endswith("; pip install 'git_scratch[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_targets_mostly_unknown_to_the_tokenizer_are_warned_about(data, tmp_path: Path, caplog) -> None:
    _, tok_dir = data
    caplog.set_level(logging.WARNING, logger="git_scratch")
    run(data, tmp_path / "known", steps=1)
    assert not [r for r in caplog.records if "unknown token" in r.getMessage()]
    foreign = tmp_path / "foreign.jsonl"  # the word-level vocabulary knows "a", not the animals
    foreign.write_text("".join(json.dumps({"image": f"{i}.png", "caption": "a zebra near giraffes"}) + "\n"
                               for i in range(16)))
    run((foreign, tok_dir), tmp_path / "foreign", steps=1)
    [message] = [r.getMessage() for r in caplog.records if "unknown token" in r.getMessage()]
    assert "48 of 64 target tokens (75%)" in message
    assert "[UNK]" in message and "'zebra'" in message and "'giraffes'" in message
    assert "own tokenizer" in message and "covers these words" in message
