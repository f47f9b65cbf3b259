"""`git-scratch parity`: passes on a tiny checkpoint, fails exactly at a planted error and not
before, speaks JSON, and says in one line how to install transformers when it is missing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from git_scratch import GIT, GitConfig
from git_scratch.checkpoints.hub import VIT
from git_scratch.cli import main
from git_scratch.tools import parity
from tests.conftest import hf_tiny, save_hf, tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    return save_hf(hf_tiny(), tmp_path_factory.mktemp("parity") / "ck")


def plant(checkpoint: Path, out: Path, key: str) -> Path:
    """A copy of `checkpoint` with rows 0 and 1 of one tensor swapped: a deliberate error."""
    shutil.copytree(checkpoint, out)
    tensors = load_file(out / "model.safetensors")
    tensors[key] = tensors[key][[1, 0, *range(2, len(tensors[key]))]].contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def stages(report: dict) -> list[tuple[str, bool | None]]:
    return [(stage["name"], stage["passed"]) for stage in report["stages"]]


def test_tiny_checkpoint_passes_every_stage(checkpoint: Path, capsys) -> None:
    assert main(["parity", str(checkpoint)]) == 0
    table = capsys.readouterr().out
    for name in ("patch embedding", "vision layer 1", "vision post-LayerNorm", "projection", "text embeddings",
                 "decoder layer 1", "logits", "loss", "greedy tokens", "beam tokens (3 beams)"):
        assert f"\n{name} " in table
    assert table.rstrip().endswith("all stages pass")


def test_json_report(checkpoint: Path, capsys) -> None:
    assert main(["parity", str(checkpoint), "--json", "--num-beams", "2", "--max-new-tokens", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["dtype"] == "float32"
    names = [name for name, _ in stages(report)]
    assert names[:3] == ["patch embedding", "vision layer 0", "vision layer 1"]
    assert names[-2:] == ["greedy tokens", "beam tokens (2 beams)"]
    by_name = {stage["name"]: stage for stage in report["stages"]}
    assert by_name["logits"]["max_abs"] < 1e-5 and by_name["logits"]["cosine"] > 0.999999
    assert by_name["greedy tokens"]["ours"] == by_name["greedy tokens"]["theirs"]
    assert len(by_name["greedy tokens"]["ours"]) <= 1 + 4


@pytest.mark.parametrize(("key", "stage"), [
    ("git.encoder.layer.1.output.dense.weight", "decoder layer 1"),
    (f"{VIT}.encoder.layers.1.mlp.fc2.weight", "vision layer 1"),
    ("git.embeddings.word_embeddings.weight", "text embeddings"),  # row 1 is [CLS]
])
def test_planted_error_fails_at_its_stage_and_not_before(checkpoint: Path, tmp_path: Path, monkeypatch, capsys,
                                                         key: str, stage: str) -> None:
    planted = plant(checkpoint, tmp_path / "planted", key)
    # Our side reads the planted copy; transformers reads the original.
    monkeypatch.setattr(parity, "load_ours", lambda _directory, dtype, device: GIT.from_pretrained(
        planted, dtype=dtype, device=device))
    assert main(["parity", str(checkpoint), "--json"]) == 1
    results = stages(json.loads(capsys.readouterr().out))
    first = next(i for i, (_, passed) in enumerate(results) if passed is False)
    assert results[first][0] == stage
    assert all(passed for _, passed in results[:first])
    assert main(["parity", str(checkpoint)]) == 1
    assert f"FAILED from: {stage} " in capsys.readouterr().out


def test_preset_builds_a_random_checkpoint_and_passes(monkeypatch, capsys) -> None:
    pytest.importorskip("transformers")
    # The real git-base takes ~30 s on 2 cores; the preset's path is the same at the tiny size.
    monkeypatch.setattr(GitConfig, "from_name", staticmethod(lambda name: tiny_config()))
    assert main(["parity", "--preset", "git-base", "--json", "--max-new-tokens", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["model"].startswith("--preset git-base")


def test_missing_transformers_is_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    assert main(["parity", "--preset", "git-base"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[test]'" in err


def test_model_or_preset_not_both(checkpoint: Path, capsys) -> None:
    assert main(["parity", str(checkpoint), "--preset", "git-base"]) == 2
    assert "not both" in capsys.readouterr().err


def test_video_checkpoint_stacks_transformers_frames(tmp_path: Path, capsys) -> None:
    """transformers runs its ViT once per frame, ours once for all frames: the stages still line up."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    video = save_hf(hf_tiny(num_image_with_embedding=2), tmp_path / "video")
    assert main(["parity", str(video), "--json", "--max-new-tokens", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["pixel_values_shape"] == [1, 2, 3, 32, 32]
