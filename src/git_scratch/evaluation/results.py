"""The official result files, written atomically and never over an existing file without force.

- captions: the COCO caption results JSON, [{"image_id": 391895, "caption": "a man riding a bike"}, ...],
  what pycocotools' COCO.loadRes reads and the COCO / nocaps / TextCaps servers take;
- questions: the VQAv2 (EvalAI) submission JSON, [{"question_id": 262148000, "answer": "yes"}, ...],
  also the format of TextVQA's EvalAI challenge.

Keys are written as the dataset gave them (COCO and VQAv2 ids are ints, TextCaps image ids strings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text


def write_caption_results(path: str | Path, predictions: Mapping[Any, str], *, force: bool = False) -> Path:
    return _write(Path(path), [{"image_id": key, "caption": text} for key, text in predictions.items()], force)


def write_vqa_results(path: str | Path, predictions: Mapping[Any, str], *, force: bool = False) -> Path:
    return _write(Path(path), [{"question_id": key, "answer": text} for key, text in predictions.items()], force)


def _write(path: Path, records: list[dict[str, Any]], force: bool) -> Path:
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it, or choose another name")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a file name such as {path / 'results.json'}")
    atomic_write_text(path, json.dumps(records, ensure_ascii=False))
    return path
