"""`git-scratch manifest`: a dataset's own files -> a training manifest that data/manifest.py reads."""

from __future__ import annotations

import json
from pathlib import Path

from git_scratch.data.manifest import read_manifest
from tests.evaluation.test_datasets import coco_file, image, vqav2_files
from tests.hardening.support import run_cli


def test_coco_captions_to_a_manifest(tmp_path: Path) -> None:
    annotations = coco_file(tmp_path / "captions_val2014.json")
    image(tmp_path / "val2014" / "COCO_val2014_000000391895.jpg")
    image(tmp_path / "val2014" / "COCO_val2014_000000522418.jpg")
    out = tmp_path / "runs" / "coco.jsonl"
    run = run_cli("manifest", "coco", "--annotations", annotations, "--images", tmp_path / "val2014", out)
    assert run.code == 0, run.err
    assert run.out.strip() == f"{out}: 3 lines from 2 examples; skipped: 1 image missing"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"image": "../val2014/COCO_val2014_000000391895.jpg",
                        "caption": "A man with a red helmet on a small moped on a dirt road. "}
    examples = read_manifest(out)  # the training reader takes it as it is
    assert [e.target for e in examples] == [
        "A man with a red helmet on a small moped on a dirt road. ",
        "Man riding a motor bike on a dirt road on the countryside.",
        "A woman wearing a net on her head cutting a cake. "]
    assert examples[0].media == tmp_path / "runs" / "../val2014/COCO_val2014_000000391895.jpg"

    again = run_cli("manifest", "coco", "--annotations", annotations, "--images", tmp_path / "val2014", out)
    assert again.code == 2 and again.err.strip() == (
        f"git-scratch: error: {out} already exists; pass --force to overwrite it, or choose another OUT.jsonl")
    forced = run_cli("manifest", "coco", "--annotations", annotations, "--images", tmp_path / "val2014", out, "--force")
    assert forced.code == 0, forced.err


def test_vqav2_to_a_manifest_trains_on_the_most_frequent_answer(tmp_path: Path) -> None:
    questions, annotations = vqav2_files(tmp_path)
    image(tmp_path / "val2014" / "COCO_val2014_000000262148.jpg")
    image(tmp_path / "val2014" / "COCO_val2014_000000393225.jpg")
    out = tmp_path / "vqa.jsonl"
    run = run_cli("manifest", "vqav2", "--annotations", annotations, "--questions", questions,
                  "--images", tmp_path / "val2014", out)
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["question"], line["answer"]) for line in lines] == [
        ("Where is he looking?", "down"), ("What are the people in the background doing?", "watching"),
        ("How many bowls?", "2")]
    assert len(lines[0]["answers"]) == 10 and lines[2]["image"] == "val2014/COCO_val2014_000000393225.jpg"
    assert [e.target for e in read_manifest(out)] == ["down", "watching", "2"]


def test_mistakes_are_one_line(tmp_path: Path) -> None:
    questions, _ = vqav2_files(tmp_path, "test-dev2015")
    image(tmp_path / "test2015" / "COCO_test2015_000000262148.jpg")
    out = tmp_path / "m.jsonl"
    unlabelled = run_cli("manifest", "vqav2", "--questions", questions, "--images", tmp_path / "test2015", out)
    assert unlabelled.code == 2 and not out.exists()
    assert unlabelled.err.count("\n") == 1 and "has its image and a reference" in unlabelled.err
    assert "1 image missing, 2 no reference (a test split?)" in unlabelled.err
    no_annotations = run_cli("manifest", "coco", "--images", tmp_path, out)
    assert no_annotations.code == 2 and no_annotations.err.strip() == (
        "git-scratch: error: coco needs its annotation file; pass it with --annotations")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    bad = run_cli("manifest", "coco", "--annotations", broken, "--images", tmp_path, out)
    assert bad.code == 2 and bad.err.strip() == (
        f"git-scratch: error: {broken}: images[0] has no field 'file_name'; is this the dataset's file as published?")
