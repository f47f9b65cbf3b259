"""`git-scratch train` and `git-scratch eval`: flag help from TrainConfig's comments, one final
line under torchrun, Ctrl-C's exit and resume command, eval's table, JSON and predictions file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from git_scratch import GIT
from git_scratch.cli import main
from git_scratch.cli.__main__ import build_parser
from git_scratch.training import loop
from git_scratch.training.loop import TrainConfig, latest_checkpoint
from tests.conftest import tiny_config
from tests.hardening.support import WORDS, make_checkpoint, run_cli
from tests.training.test_train import make_data


def train_parser() -> argparse.ArgumentParser:
    [subparsers] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices["train"]


def test_every_train_flag_says_what_it_does() -> None:
    actions = {a.dest: a for a in train_parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        text = re.sub(r"\(default: .*\)$", "", actions[f.name].help or "").strip()
        assert len(text.split()) >= 2, (f.name, actions[f.name].help)
    assert actions["lr"].help == "peak learning rate, reached after warmup (default: 5e-05)"
    assert "~30%% slower" in actions["grad_checkpointing"].help  # argparse prints it as ~30%
    assert "~30% slower" in " ".join(train_parser().format_help().split())


@pytest.mark.parametrize(("rank", "lines"), [("0", 1), ("1", 0)])
def test_train_prints_its_final_line_on_rank_zero_only(tmp_path: Path, monkeypatch, capsys, rank: str,
                                                       lines: int) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(loop, "train", lambda cfg, **options: {
        "steps": 3, "final_loss": 1.25, "model_dir": str(tmp_path / "run" / "model"),
        "eval": {"eval/vqa_accuracy": 0.5}})
    assert main(["train", "--train-manifest", "m.jsonl", "--out-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == lines
    if lines:
        assert out[0].startswith("trained to step 3, final loss 1.2500, eval/vqa_accuracy 0.5; model in")


def test_allow_changes_needs_resume(tmp_path: Path) -> None:
    result = run_cli("train", "--train-manifest", "m.jsonl", "--out-dir", tmp_path / "run", "--allow-changes")
    assert result.code == 2 and "--allow-changes only applies when resuming; add --resume" in result.err


def test_ctrl_c_exits_130_and_the_logged_command_resumes(tmp_path: Path, monkeypatch, caplog) -> None:
    manifest, tok_dir = make_data(tmp_path)
    model_json = tmp_path / "tiny.json"
    tiny_config(dropout=0.0, attn_dropout=0.0).save(model_json)
    out = tmp_path / "run"
    args = ["train", "--model", str(model_json), "--tokenizer", str(tok_dir), "--train-manifest", str(manifest),
            "--out-dir", str(out), "--steps", "4", "--batch-size", "4", "--warmup-steps", "1", "--lr", "0.003"]
    forward, calls = GIT.forward, []

    def interrupted(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:  # the third step, after two have finished
            raise KeyboardInterrupt
        return forward(self, *a, **kw)

    caplog.set_level(logging.WARNING, logger="git_scratch")
    with monkeypatch.context() as patch:
        patch.setattr(GIT, "forward", interrupted)
        result = run_cli(*args)
    assert result.code == 130 and "git-scratch: interrupted" in result.err
    assert latest_checkpoint(out).name == "step-0000002"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("interrupted")]
    command = shlex.split(line.split("continue with: ", 1)[1])
    caplog.clear()
    resumed = run_cli(*command[1:])
    assert resumed.code == 0, resumed.err
    assert resumed.out.startswith("trained to step 4")
    assert [r.getMessage() for r in caplog.records if "at step 2" in r.getMessage()]  # shown without -v


@pytest.fixture
def eval_files(tmp_path: Path) -> tuple[Path, Path]:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "a.png")
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "caption": f"{WORDS[1]} {WORDS[2]}",
                                    "captions": [f"{WORDS[1]} {WORDS[2]}", WORDS[3]]}) + "\n"
                        + json.dumps({"image": "a.png", "question": f"{WORDS[4]} ?", "answer": WORDS[5]}) + "\n")
    return ckpt, manifest


def test_eval_prints_a_table_or_with_json_one_object(eval_files: tuple[Path, Path]) -> None:
    ckpt, manifest = eval_files
    table = run_cli("eval", ckpt, manifest)
    as_json = run_cli("eval", ckpt, manifest, "--json")
    assert table.code == as_json.code == 0
    metrics = json.loads(as_json.out)
    lines = table.out.strip().splitlines()
    assert len(lines) == len(metrics)
    for line, (name, value) in zip(lines, metrics.items()):
        shown_name, shown_value = line.split()
        assert shown_name == name
        assert shown_value == (f"{value:.4f}" if isinstance(value, float) else str(value))
    assert metrics["n_captions"] == 1 and metrics["n_questions"] == 1


def test_eval_predictions_file_one_line_per_example_and_force(eval_files: tuple[Path, Path]) -> None:
    ckpt, manifest = eval_files
    out = manifest.parent / "predictions.jsonl"
    assert run_cli("eval", ckpt, manifest, "--predictions", out).code == 0
    caption, question = [json.loads(line) for line in out.read_text().splitlines()]
    assert caption["file"] == str(manifest.parent / "a.png") and caption["prompt"] is None
    assert caption["references"] == [f"{WORDS[1]} {WORDS[2]}", WORDS[3]]
    assert question["prompt"] == f"{WORDS[4]} ?" and question["references"] == [WORDS[5]]
    assert all(isinstance(row["prediction"], str) for row in (caption, question))
    out.write_text("mine\n")
    refused = run_cli("eval", ckpt, manifest, "--predictions", out)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "already exists; pass --force" in refused.err and out.read_text() == "mine\n"
    assert run_cli("eval", ckpt, manifest, "--predictions", out, "--force").code == 0
    assert len(out.read_text().splitlines()) == 2
