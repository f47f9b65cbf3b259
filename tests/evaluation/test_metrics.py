"""Caption scores equal to the COCO caption toolkit run as its README runs it (COCO + COCOEvalCap on
the official JSON files), and VQA accuracy equal to a hand-computed example of the official rules."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from git_scratch.evaluation import metrics
from git_scratch.evaluation.metrics import caption_scores, normalize_answer, vqa_accuracy, vqa_scores
from git_scratch.evaluation.results import write_caption_results

needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="java is not on PATH: the PTB tokenizer and METEOR are Java programs")

# --- a deterministic generator of varied captions ---------------------------------------------------

SUBJECTS = ["a man", "A woman", "two dogs", "the little girl", "an old car", "Three people", "a cat", "the chef",
            "a red bus", "some kids", "a skateboarder", "the giraffe's calf"]
VERBS = ["is riding", "sits on", "stands next to", "looks at", "is holding", "walks past", "jumps over", "eats",
         "is parked by", "plays with", "isn't near", "leans against"]
OBJECTS = ["a horse", "the bench", "a wooden table", "a pizza", "the street", "a frisbee", "a large window",
           "the beach", "a pile of snow", "two bikes", "a laptop", "a stop-sign"]
TAILS = ["", ".", " .", " in the park", ", smiling", " at night.", " (outdoors)", " on a sunny day!", "...",
         " -- again", " near 3 trees", "; it's cold"]


def caption(rng: random.Random, scene: tuple[int, int, int]) -> str:
    """A caption of `scene` (subject, verb, object), sometimes with one part swapped, varied tails."""
    parts = [list(SUBJECTS), list(VERBS), list(OBJECTS)]
    words = [part[i] if rng.random() < 0.75 else rng.choice(part) for part, i in zip(parts, scene)]
    text = " ".join(words) + rng.choice(TAILS)
    return text.upper() if rng.random() < 0.03 else text


def synthetic_captions(n: int, seed: int = 0) -> tuple[dict[int, str], dict[int, list[str]]]:
    rng = random.Random(seed)
    predictions, references = {}, {}
    for i in range(n):
        image_id = 100_000 + 37 * i
        scene = (rng.randrange(len(SUBJECTS)), rng.randrange(len(VERBS)), rng.randrange(len(OBJECTS)))
        references[image_id] = [caption(rng, scene) for _ in range(rng.randint(3, 6))]
        unrelated = (rng.randrange(len(SUBJECTS)), rng.randrange(len(VERBS)), rng.randrange(len(OBJECTS)))
        predictions[image_id] = caption(rng, scene if rng.random() < 0.8 else unrelated)
    return predictions, references


def write_coco_annotations(path: Path, references: dict[int, list[str]]) -> Path:
    """references in the layout of captions_val2014.json."""
    images = [{"id": k, "file_name": f"COCO_val2014_{k:012d}.jpg", "height": 480, "width": 640} for k in references]
    annotations = []
    for k, captions in references.items():
        annotations += [{"image_id": k, "id": len(annotations) + j + 1, "caption": c} for j, c in enumerate(captions)]
    path.write_text(json.dumps({"info": {}, "licenses": [], "type": "captions", "images": images,
                                "annotations": annotations}))
    return path


class NoSpice:
    """Stands in for pycocoevalcap's Spice, whose constructor downloads Stanford CoreNLP, when its jars are absent."""

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        return 0.0, [0.0] * len(gts)

    def method(self) -> str:
        return "SPICE"


def spice_jars_present() -> bool:
    from pycocoevalcap import spice

    return all((Path(spice.__file__).parent / "lib" / jar).is_file() for jar in metrics.SPICE_JARS)


@pytest.mark.slow  # METEOR's Java process loads its paraphrase table: 10-40 s, twice
@needs_java
def test_caption_scores_equal_the_toolkit_on_its_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    predictions, references = synthetic_captions(300)
    # A subset of the images is predicted, as in the toolkit's example (params['image_id'] = results' ids).
    predicted = {k: v for i, (k, v) in enumerate(predictions.items()) if i % 10}
    coco = COCO(str(write_coco_annotations(tmp_path / "captions_val2014.json", references)))
    results = coco.loadRes(str(write_caption_results(tmp_path / "results.json", predicted)))
    if not spice_jars_present():
        monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    official = coco_eval.COCOEvalCap(coco, results)
    official.params["image_id"] = results.getImgIds()
    official.evaluate()
    printed = capsys.readouterr().out

    ours = caption_scores(predicted, references)
    assert ours["tokenizer"] == "ptb" and ours["n_images"] == 270
    for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]:
        assert f"{name}: {ours[name]:0.3f}" in printed  # the toolkit's own printout, to its last digit
        assert ours[name] == official.eval[name], name  # the same classes on the same tokens: the same floats
    assert 0.05 < ours["Bleu_4"] < 0.95 and 0.1 < ours["CIDEr"] < 5  # the generator gives non-trivial scores
    if spice_jars_present():
        assert ours["SPICE"] == pytest.approx(official.eval["SPICE"])
    else:
        assert ours["SPICE"] is None and "stanford-corenlp-3.6.0.jar is missing" in ours["spice_skipped"]


def test_missing_java_names_the_fix_and_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pycocoevalcap")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java
    predictions, references = synthetic_captions(20)
    with pytest.raises(ValueError, match=r"needs java, which is not on PATH; install Java .* --tokenizer python") as e:
        caption_scores(predictions, references)
    assert "\n" not in str(e.value)
    fallback = caption_scores(predictions, references, tokenizer="python")  # explicit, and it says so
    assert fallback["tokenizer"] == "python" and fallback["METEOR"] is None and "java" in fallback["meteor_skipped"]
    assert fallback["SPICE"] is None and "java is not on PATH" in fallback["spice_skipped"]
    assert 0 < fallback["Bleu_4"] < 1 and fallback["CIDEr"] > 0


def test_python_fallback_scores_the_python_tokens_with_the_toolkit(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    monkeypatch.setenv("PATH", str(tmp_path))  # no java: no METEOR, no SPICE, seconds
    predictions, references = synthetic_captions(50, seed=1)
    ours = caption_scores(predictions, references, tokenizer="python")
    # The fallback rule, written out: lowercase, non-word characters to spaces ("it's" -> "it s").
    def rule(text: str) -> str:
        return " ".join("".join(ch if ch.isalnum() or ch in "_ " else " " for ch in text.lower()).split())

    tokens = {k: [rule(c)] for k, c in predictions.items()}
    refs = {k: [rule(c) for c in cs] for k, cs in references.items()}
    assert ours["Bleu_4"] == Bleu(4).compute_score(refs, tokens, verbose=0)[0][3]
    assert ours["ROUGE_L"] == Rouge().compute_score(refs, tokens)[0]
    assert ours["CIDEr"] == Cider().compute_score(refs, tokens)[0]


def test_caption_scores_refuse_what_cannot_be_scored() -> None:
    pytest.importorskip("pycocoevalcap")
    with pytest.raises(ValueError, match="tokenizer 'nltk' is unknown; pass one of ptb, python"):
        caption_scores({1: "a"}, {1: ["a"]}, tokenizer="nltk")
    with pytest.raises(ValueError, match=r"1 predictions have no references \(first: 7\)"):
        caption_scores({7: "a cat"}, {1: ["a cat"]}, tokenizer="python")
    with pytest.raises(ValueError, match="image 1 has no reference captions"):
        caption_scores({1: "a cat"}, {1: []}, tokenizer="python")


# --- VQA ------------------------------------------------------------------------------------------------

def question(key: int, answers: list[str], answer_type: str | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, references=tuple(answers), answer_type=answer_type)


def test_vqa_accuracy_by_hand() -> None:
    """Each question's accuracy worked out by hand from the official rules:
    acc = mean over the 10 leave-one-out subsets of min(1, matches / 3); the prediction is normalised
    (punctuation, numbers, articles, contractions), the human answers get the punctuation rule only,
    and only when they are not all equal."""
    items = [
        question(1, ["yes"] * 10, "yes/no"),  # "Yes" -> "yes": 9 matches in every subset -> 1
        question(2, ["yes"] * 2 + ["no"] * 8, "yes/no"),  # "yes." -> "yes": 2 subsets x 1/3, 8 x 2/3 -> 0.6
        question(3, ["2"] * 2 + ["two"] * 8, "number"),  # "two" -> "2"; the answers' "two" stay words -> 0.6
        question(4, ["1000"] * 3 + ["1,000"] * 2 + ["100"] * 5, "number"),  # digit,digit: "1,000" -> "1000" -> 1
        question(5, ["3"] + ["4"] * 9, "number"),  # 1 subset x 0, 9 x 1/3 -> 0.3
        question(6, ["t-shirt"] * 3 + ["shirt"] * 7, "other"),  # both sides "t shirt": 3 x 2/3, 7 x 1 -> 0.9
        question(7, ["don't"] + ["no"] * 9, "other"),  # "dont" -> "don't": 1 x 0, 9 x 1/3 -> 0.3
        question(8, ["dog"] * 10, "other"),  # "cat" -> 0
    ]
    predictions = {1: "Yes", 2: "yes.", 3: "two", 4: "1,000", 5: "3", 6: "t-shirt", 7: "dont", 8: "cat"}
    expected = {1: 1.0, 2: 0.6, 3: 0.6, 4: 1.0, 5: 0.3, 6: 0.9, 7: 0.3, 8: 0.0}
    for item in items:
        assert vqa_accuracy(predictions[item.key], item.references) == pytest.approx(expected[item.key]), item.key
    result = vqa_scores(predictions, items + [question(9, ["no"] * 10, "yes/no")])  # 9: not predicted
    # overall 4.7 / 8 = 58.75 %; yes/no (1 + 0.6) / 2 = 80 %; number 1.9 / 3 = 63.333.. -> 63.33; other 1.2 / 3 = 40 %
    assert result["accuracy"] == 58.75
    assert result["accuracy_by_type"] == {"yes/no": 80.0, "number": 63.33, "other": 40.0}
    assert result["n_questions"] == 8 and result["n_unanswered"] == 1
    assert result["n_by_type"] == {"yes/no": 2, "number": 3, "other": 3}


def test_single_reference_is_exact_match_after_normalisation() -> None:
    assert vqa_accuracy("The Man.", ["man"]) == 1.0 and vqa_accuracy("woman", ["man"]) == 0.0
    result = vqa_scores({1: "man", 2: "dog"}, [question(1, ["man"], None), question(2, ["cat"], None)])
    assert result["accuracy"] == 50.0 and result["accuracy_by_type"] == {}


@pytest.mark.parametrize(("raw", "normal"), [
    ("Two dogs", "2 dogs"), ("left/right", "left right"), ("a/b", "b"), ("yes, it is", "yes it is"), ("3.5", "3.5"),
    ("end.", "end"),
    ("(none)", "0"), ("  Ten\n", "10"), ("Its", "its"), ("couldnt've", "couldn't've"), ("oclock", "o'clock"),
])
def test_vqa_normalisation_follows_the_official_rules(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_vqa_scores_refuse_what_cannot_be_scored() -> None:
    with pytest.raises(ValueError, match=r"1 predictions are for questions not in the dataset \(first: 5\)"):
        vqa_scores({5: "yes"}, [question(1, ["yes"] * 10, "yes/no")])
    with pytest.raises(ValueError, match="no reference answers .*write_vqa_results"):
        vqa_scores({1: "yes"}, [question(1, [], None)])


def test_textvqa_rule_normalises_the_human_answers_too() -> None:
    """TextVQA's evaluator lowercases and normalises all ten answers; vqaEval.py touches the answers'
    punctuation only, and only when they disagree (VQAv2's answers were normalised at collection)."""
    mixed = ["dakota"] * 2 + ["Dakota"] * 2 + ["kodak"] * 6
    # vqav2: only the 2 lowercase answers match "dakota": 2 subsets x 1/3 + 8 x 2/3 -> 0.6
    assert vqa_accuracy("Dakota", mixed) == pytest.approx(0.6)
    # textvqa: 4 match: 4 subsets x 3 matches + 6 x 4, all capped at 1 -> 1.0
    assert vqa_accuracy("Dakota", mixed, "textvqa") == 1.0
    assert vqa_accuracy("yes", ["Yes"] * 10) == 0.0  # ten equal answers are compared as they are
    assert vqa_accuracy("yes", ["Yes"] * 10, "textvqa") == 1.0
    result = vqa_scores({1: "Dakota"}, [question(1, mixed, None)], rule="textvqa")
    assert result["accuracy"] == 100.0 and result["rule"] == "textvqa"
    with pytest.raises(ValueError, match="VQA rule 'gqa' is unknown; pass one of vqav2, textvqa"):
        vqa_accuracy("yes", ["yes"], "gqa")
