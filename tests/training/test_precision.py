"""Training precision: bf16 autocast on CPU over fp32 weights, optimizer state and checkpoints;
the setting's config, flag and resume; a device without bf16 refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from git_scratch.training import precision as precision_module
from git_scratch.training.loop import STATE_FILE, TrainConfig, latest_checkpoint
from git_scratch.training.precision import resolve_precision
from git_scratch.training.resume import resume_command
from tests.hardening.support import error_line, run_cli
from tests.training.test_train import make_data, params, run


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path)


def test_bf16_autocasts_every_linear_and_keeps_weights_state_and_checkpoint_fp32(data, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    seen: set[torch.dtype] = set()
    original = nn.Module.__call__

    def record(module, *args, **kwargs):  # every linear layer's output in the step, accel's FastLinear included
        out = original(module, *args, **kwargs)
        if isinstance(module, nn.Linear):
            seen.add(out.dtype)
        return out
    monkeypatch.setattr(nn.Module, "__call__", record)
    result = run(data, tmp_path / "run", precision="bf16")
    monkeypatch.undo()
    assert seen == {torch.bfloat16}
    assert result["precision"] == "bf16"
    assert {p.dtype for p in result["model"].parameters()} == {torch.float32}
    checkpoint = latest_checkpoint(tmp_path / "run")
    state = torch.load(checkpoint / STATE_FILE, weights_only=False)
    moments = [t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    for directory in (checkpoint, Path(result["model_dir"])):
        with safe_open(directory / "model.safetensors", "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}, directory


def test_bf16_losses_follow_fp32_within_bf16_rounding(data, tmp_path: Path) -> None:
    """Same init, same batches: step 1's loss differs by the forward's rounding only, later steps
    also by the updates it led to. bf16 keeps 8 significant bits, 2^-9 = 2e-3 relative per
    rounding, on logits that are small in this model (init std 0.02): they move by some 1e-4, and
    the cross-entropy as much (1e-4 relative was measured). 1e-3 leaves room for six steps of
    drift and is still below what one rounding of the loss itself to bf16 costs (up to 2.9e-3 at
    a loss of 2.7), so it also holds the loss to fp32. The losses must differ, or autocast never ran."""
    fp32 = run(data, tmp_path / "fp32", precision="fp32", log_every=1)
    bf16 = run(data, tmp_path / "bf16", precision="bf16", log_every=1)
    assert fp32["precision"] == "fp32"
    a, b = ([json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("fp32", "bf16"))
    assert len(a) == len(b) == 6
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-3, atol=0)
    assert a != b


def test_a_bf16_run_resumes_exactly_and_may_resume_in_fp32(data, tmp_path: Path) -> None:
    full = run(data, tmp_path / "full", save_every=3, precision="bf16")
    step3 = tmp_path / "full" / "checkpoints" / "step-0000003"
    for name in ("bf16", "fp32"):
        shutil.copytree(step3, tmp_path / name / "checkpoints" / step3.name)
    resumed = run(data, tmp_path / "bf16", save_every=3, resume=True, precision="bf16")
    for key, value in params(full["model"]).items():
        torch.testing.assert_close(params(resumed["model"])[key], value, atol=0, rtol=0, msg=key)
    # precision is how the run rounds, not what it trains: a resume may change it without allow_changes
    assert run(data, tmp_path / "fp32", save_every=3, resume=True, precision="fp32")["precision"] == "fp32"


def test_precision_from_config_file_flag_and_resume_command(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"train_manifest": "m.jsonl", "precision": "bf16"}))
    cfg = TrainConfig.load(path)
    assert cfg.precision == "bf16"
    assert TrainConfig.load(path, precision="fp32").precision == "fp32"
    assert TrainConfig().precision == "auto"
    command = resume_command({"precision": "bf16", "resume": True}, {"precision": "auto", "resume": False}, 1)
    assert command == "git-scratch train --precision bf16 --resume"


def test_cli_precision_flag_reaches_the_config(tmp_path: Path, monkeypatch) -> None:
    seen: list[TrainConfig] = []
    monkeypatch.setattr("git_scratch.training.loop.train", lambda cfg, **options: seen.append(cfg) or {
        "steps": 1, "final_loss": 1.0, "model_dir": "m", "eval": {}})
    result = run_cli("train", "--train-manifest", "m.jsonl", "--out-dir", tmp_path / "run", "--precision", "bf16")
    assert result.code == 0, result.err
    assert [cfg.precision for cfg in seen] == ["bf16"]


def test_a_bad_precision_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train", "--train-manifest", "m.jsonl", "--out-dir", tmp_path / "run", "--precision", "fp16")
    error_line(result, "precision = 'fp16' is not one of auto, fp32, bf16")
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"precision": "half"}))
    with pytest.raises(ValueError, match=r"cfg.json: training config field precision = 'half' is not one of"):
        TrainConfig.load(path)


def test_auto_is_the_old_behaviour_and_bf16_without_support_is_refused(monkeypatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(precision_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision_module.torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(ValueError, match=r"precision 'bf16' on device cuda, which has no bfloat16 autocast.*"
                                         r"use --precision fp32$"):
        resolve_precision("bf16", torch.device("cuda"))
