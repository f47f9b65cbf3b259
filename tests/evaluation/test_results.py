"""The official result files: what pycocotools' COCO.loadRes and the VQA servers read, written
atomically, never over an existing file without force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from git_scratch.evaluation.results import write_caption_results, write_vqa_results


def test_caption_results_load_in_the_coco_api(tmp_path: Path) -> None:
    pycoco = pytest.importorskip("pycocotools.coco")
    annotations = tmp_path / "captions_val2014.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"},
                   {"id": 522418, "file_name": "COCO_val2014_000000522418.jpg"}],
        "annotations": [{"image_id": 391895, "id": 1, "caption": "a man on a moped"},
                        {"image_id": 522418, "id": 2, "caption": "a woman cutting a cake"}]}))
    out = write_caption_results(tmp_path / "captions_val2014_git_results.json",
                                {391895: "a man riding a motorcycle", 522418: "a woman with a cake"})
    assert json.loads(out.read_text()) == [{"image_id": 391895, "caption": "a man riding a motorcycle"},
                                           {"image_id": 522418, "caption": "a woman with a cake"}]
    results = pycoco.COCO(str(annotations)).loadRes(str(out))
    assert sorted(results.getImgIds()) == [391895, 522418]
    assert results.imgToAnns[522418][0]["caption"] == "a woman with a cake"


def test_vqa_submission_format(tmp_path: Path) -> None:
    out = write_vqa_results(tmp_path / "vqav2_test-dev_results.json", {262148000: "down", 262148001: "watching"})
    assert json.loads(out.read_text()) == [{"question_id": 262148000, "answer": "down"},
                                           {"question_id": 262148001, "answer": "watching"}]


def test_no_overwrite_without_force_and_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.json"
    path.write_text("earlier run")
    with pytest.raises(FileExistsError, match=r"results\.json already exists; pass --force"):
        write_vqa_results(path, {1: "yes"})
    assert path.read_text() == "earlier run"
    write_vqa_results(path, {1: "yes"}, force=True)
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "yes"}]

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)  # the temporary file's write fails
    with pytest.raises(OSError, match="No space left"):
        write_caption_results(path, {1: "a cat"}, force=True)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "yes"}]  # the old file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left behind
    with pytest.raises(ValueError, match="is a directory; pass a file name"):
        write_caption_results(tmp_path, {1: "a cat"}, force=True)
