"""Manifest lines: one that holds a caption and a question is a bad line, named by file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from git_scratch.data.manifest import read_manifest


def write_manifest(directory: Path, records: list[dict[str, str]]) -> Path:
    Image.new("RGB", (8, 8)).save(directory / "a.png")
    path = directory / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_caption_and_question_on_one_line_is_a_bad_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_manifest(tmp_path, [
        {"image": "a.png", "caption": "a black square"},
        {"image": "a.png", "caption": "a black square", "question": "what colour?", "answer": "black"},
        {"image": "a.png", "question": "what colour?", "answer": "black"},
        {"image": "a.png", "caption": "a black square", "answer": "black"},
    ])
    with caplog.at_level(logging.WARNING):
        examples = read_manifest(path)
    assert [(ex.line, ex.prompt, ex.target) for ex in examples] == [
        (1, None, "a black square"), (3, "what colour?", "black")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    for line, warning in zip((2, 4), warnings):
        assert warning.startswith(f'{path}:{line}: has "caption" and "question"/"answer"; '), warning
        assert "\n" not in warning


def test_a_manifest_of_such_lines_is_refused(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, [{"image": "a.png", "caption": "a square", "question": "what?", "answer": "a"}])
    with pytest.raises(ValueError) as error:
        read_manifest(path)
    assert f'(first: {path}:1: has "caption" and "question"' in str(error.value)
