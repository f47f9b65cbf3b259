"""Resuming: changed settings are refused or, when allowed, really used; Ctrl-C saves the step
it interrupts and says how to go on, and the resumed run ends where the uninterrupted one does."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import signal
from pathlib import Path

import pytest
import torch

from git_scratch import GIT
from git_scratch.cli.__main__ import build_parser
from git_scratch.training.loop import TrainConfig, latest_checkpoint, lr_factor
from git_scratch.training.resume import resume_command
from tests.training.test_train import make_data, params, run


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_resume_with_other_settings_is_refused_in_one_line(data, tmp_path: Path) -> None:
    run(data, tmp_path / "run", steps=3)
    other = tmp_path / "other.jsonl"
    shutil.copy(data[0], other)
    with pytest.raises(ValueError) as refused:
        run(data, tmp_path / "run", steps=3, resume=True, lr=1e-3, batch_size=2, warmup_steps=100,
            train_manifest=str(other))
    message = str(refused.value)
    assert "\n" not in message
    for change in ("lr 0.003 -> 0.001", "batch_size 4 -> 2", "warmup_steps 2 -> 100",
                   f"train_manifest {str(data[0])!r} -> {str(other)!r}"):
        assert change in message, message
    assert message.endswith("; pass the saved values, or --allow-changes (train(..., allow_changes=True)) "
                            "to train on with the new ones")
    # where and how the run is watched is not what it trains: these pass
    run(data, tmp_path / "run", steps=3, resume=True, log_every=1, save_every=5, keep_last=3, num_workers=0,
        preload=True)


def test_allowed_changes_are_in_force_and_logged_once(data, tmp_path: Path, monkeypatch, caplog) -> None:
    run(data, tmp_path / "run", steps=3)
    seen: list[list[dict]] = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        seen.append([{k: g[k] for k in ("lr", "betas", "weight_decay")} for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    caplog.set_level(logging.WARNING, logger="git_scratch")
    changes = {"steps": 6, "lr": 1e-3, "warmup_steps": 1, "min_lr_ratio": 0.1, "weight_decay": 0.05,
               "betas": (0.8, 0.99)}
    run(data, tmp_path / "run", resume=True, allow_changes=True, **changes)
    new = TrainConfig(**changes)
    first = seen[0]  # the first resumed step, step index 3
    assert {g["lr"] for g in first} == {1e-3 * lr_factor(3, new)}  # not the old 3e-3, not the old schedule
    assert {g["betas"] for g in first} == {(0.8, 0.99)}
    assert {g["weight_decay"] for g in first} == {0.0, 0.05}  # matrices decay, the rest never does
    logged = warnings(caplog)
    for change in ("steps 3 -> 6", "lr 0.003 -> 0.001", "warmup_steps 2 -> 1", "min_lr_ratio 0.0 -> 0.1",
                   "weight_decay 0.01 -> 0.05", "betas (0.9, 0.999) -> (0.8, 0.99)"):
        assert sum(change in line for line in logged) == 1, (change, logged)
    assert any("resuming from" in line and "at step 3" in line for line in logged)


def interrupt_forward(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    """GIT.forward raises KeyboardInterrupt right after its `at_call`-th call has run."""
    forward, calls = GIT.forward, []

    def interrupted(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(GIT, "forward", interrupted)


def test_ctrl_c_saves_the_step_and_the_resumed_run_ends_as_the_uninterrupted(data, tmp_path: Path, monkeypatch,
                                                                             caplog) -> None:
    full = run(data, tmp_path / "full", grad_accum=2)
    caplog.set_level(logging.WARNING, logger="git_scratch")
    with monkeypatch.context() as patch:
        # the second micro-batch of step 4: its dropout and the first one's have drawn from the RNG
        interrupt_forward(patch, at_call=2 * 3 + 2)
        with pytest.raises(KeyboardInterrupt):
            run(data, tmp_path / "cut", grad_accum=2)
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000003"
    [line] = [m for m in warnings(caplog) if m.startswith("interrupted")]
    assert f"step 3 is saved in {tmp_path / 'cut' / 'checkpoints' / 'step-0000003'}" in line
    command = line.split("continue with: ", 1)[1]
    words = shlex.split(command)
    assert words[:2] == ["git-scratch", "train"] and words[-1] == "--resume"
    assert words[words.index("--out-dir") + 1] == str(tmp_path / "cut")
    caplog.clear()
    resumed = run(data, tmp_path / "cut", grad_accum=2, resume=True)
    assert any("at step 3" in m for m in warnings(caplog))
    a, b = params(full["model"]), params(resumed["model"])
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)
    assert resumed["final_loss"] == full["final_loss"]


def test_the_logged_command_rebuilds_the_config(tmp_path: Path) -> None:
    cfg = TrainConfig(train_manifest=str(tmp_path / "a b.jsonl"), out_dir=str(tmp_path / "run"), lr=3e-4,
                      vision_lr=0.0, betas=(0.8, 0.95), pack=False, eval_manifest="held.jsonl", eval_every=5)
    settings, defaults = dataclasses.asdict(cfg), dataclasses.asdict(TrainConfig())
    words = shlex.split(resume_command(settings, defaults, world=1))
    args = build_parser().parse_args(words[1:])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: tuple(v) if k == "betas" else v for k, v in vars(args).items() if k in fields}
    assert TrainConfig(**overrides) == dataclasses.replace(cfg, resume=True)
    torchrun = ["torchrun", "--nproc-per-node=2", "-m", "git_scratch.cli", "train"]
    assert shlex.split(resume_command(settings, defaults, world=2))[:5] == torchrun


def test_ctrl_c_during_the_weight_update_waits_for_the_update(data, tmp_path: Path, monkeypatch) -> None:
    """A Ctrl-C landing in optimizer.step must not leave the weights a step ahead of the
    schedule and of the checkpoint's step number."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has another handler in this process")
    full = run(data, tmp_path / "full")
    step, calls = torch.optim.AdamW.step, []

    def ctrl_c_mid_update(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # before the scheduler's step and the bookkeeping
        return result

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", ctrl_c_mid_update)
        with pytest.raises(KeyboardInterrupt):
            run(data, tmp_path / "cut")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000003"
    resumed = run(data, tmp_path / "cut", resume=True)
    a, b = params(full["model"]), params(resumed["model"])
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)


def test_ctrl_c_before_the_first_step_saves_nothing(data, tmp_path: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="git_scratch")
    interrupt_forward(monkeypatch, at_call=1)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run") is None
    assert any("nothing was saved" in m for m in warnings(caplog))
