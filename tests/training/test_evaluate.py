"""Metrics: the VQAv2 normalisation and accuracy, exact match, and the COCO caption scorers."""

from __future__ import annotations

from pathlib import Path

import pytest

from git_scratch.data.manifest import Example
from git_scratch.training.evaluate import coco_caption_metrics, normalize_answer, score, vqa_accuracy


@pytest.mark.parametrize(("raw", "normal"), [
    ("Two", "2"), ("the dog.", "dog"), ("a red circle!", "red circle"), ("dont", "don't"),
    ("1,000", "1000"), ("yes, it is", "yes it is"), ("  Ten ", "10"), ("an apple", "apple"),
])
def test_vqa_normalisation(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_vqa_accuracy_ten_answers() -> None:
    refs = ["2"] * 3 + ["3"] * 7
    # official formula: mean over leave-one-out subsets of min(matches / 3, 1)
    expected = (3 * (2 / 3) + 7 * 1.0) / 10
    assert vqa_accuracy("two", refs) == pytest.approx(expected)
    assert vqa_accuracy("3", refs) == 1.0
    assert vqa_accuracy("red", ["Red."]) == 1.0 and vqa_accuracy("blue", ["red"]) == 0.0


def test_score_separates_captions_and_questions() -> None:
    media = Path("x.png")
    examples = [Example(1, media, False, None, "a red circle"), Example(2, media, False, None, "a blue square"),
                Example(3, media, False, "what color?", "red"), Example(4, media, False, "what shape?", "circle")]
    result = score(examples, ["A red circle.", "a blue circle", "red", None])
    assert result["caption_exact_match"] == 0.5
    assert result["vqa_accuracy"] == 1.0 and result["n_questions"] == 1 and result["n_failed"] == 1


def test_coco_metrics_reward_the_right_caption() -> None:
    pytest.importorskip("pycocoevalcap")
    refs = [["a red circle left of a blue square", "a red circle beside a blue square"],
            ["a small green triangle", "a green triangle"]]
    good = coco_caption_metrics(["a red circle left of a blue square", "a small green triangle"], refs)
    bad = coco_caption_metrics(["a yellow square above a purple circle", "a large blue circle"], refs)
    assert good["bleu4"] > 0.9 > 0.1 > bad["bleu4"]
    assert good["cider"] > bad["cider"]
