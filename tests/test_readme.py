"""The README's Python example runs as written: a small checkpoint is made where its path points,
and a photo where it reads one, and the block is executed unchanged."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.hardening.support import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    example = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    path = re.search(r'path = "([^"]+)"', example).group(1)
    make_checkpoint(tmp_path / path)
    for image in re.findall(r'load_image\("([^"]+)"\)', example):
        pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / image)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})  # our own README's code
    caption, answers = capsys.readouterr().out.splitlines()  # the two prints
    assert caption.strip() == caption  # one decoded line, cut at [SEP]
    answers = ast.literal_eval(answers)
    assert isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) for a in answers)
