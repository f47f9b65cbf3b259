"""scripts/spatial_probe.py: the per-part count of two-object captions behind docs/training.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from git_scratch.demo.recipe import run_demo
from git_scratch.demo.shapes import ShapesConfig
from tests.scripts.test_extending import load_script

probe = load_script("spatial_probe")

TARGET = "a small red circle left of a large blue square"


def test_caption_parts_counts_each_part_on_its_own() -> None:
    parts = probe.caption_parts([
        (TARGET, TARGET),                                               # all right
        (TARGET, "a large blue square left of a small red circle"),     # order swapped
        (TARGET, "a small red circle above a large blue square"),       # relation wrong
        (TARGET, "a small red circle left of a large blue circle"),     # second object's shape wrong
        (TARGET, "a small red circle"),                                 # one object only
        (TARGET, None),                                                 # the image could not be read
    ])
    assert parts["images"] == 6
    assert parts["exact"] == pytest.approx(1 / 6)
    assert parts["two objects named"] == pytest.approx(4 / 6)
    assert parts["both objects right"] == pytest.approx(3 / 6)
    assert parts["first object right"] == pytest.approx(3 / 6)
    assert parts["relation right"] == pytest.approx(3 / 6)


def test_the_script_reads_a_demo_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shapes = dataclasses.replace(ShapesConfig(), n_train=32, n_heldout=24, n_compositional=2)
    run_demo(tmp_path / "run", steps=1, progress=False, shapes=shapes)
    manifest = [json.loads(line) for line in (tmp_path / "run" / "data" / "heldout.jsonl").open()]
    two_objects = sum(probe.TWO_OBJECTS.fullmatch(ex.get("caption", "")) is not None for ex in manifest)
    assert two_objects > 0
    assert probe.main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"held-out two-object captions: {two_objects} images" in out
    assert "relation right" in out and "position table norm" in out and "sin-cos table times s" in out


def test_a_directory_that_is_not_a_demo_run_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"config.json not found; pass the --out directory"):
        probe.main([str(tmp_path)])
