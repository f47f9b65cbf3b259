"""Scores as the published tables compute them: the COCO caption toolkit, and the official VQA accuracy.

Captions go through pycocoevalcap's own classes (tylin/coco-caption, packaged as salaniz/pycocoevalcap),
in the order COCOEvalCap runs them: the Stanford PTB tokenizer (Java) on references and predictions
separately, then BLEU-1..4, METEOR (Java), ROUGE-L, CIDEr-D and SPICE (Java, and Stanford CoreNLP
jars that pycocoevalcap downloads on first use: without them SPICE is skipped, saying why). Scoring a
subset of the images is what the toolkit's own example does (`cocoEval.params['image_id'] =
cocoRes.getImgIds()`): only the images that have a prediction count, in the references' order.
`tokenizer="python"` (lowercase, punctuation removed, split on whitespace) is a named fallback for
machines without Java; its numbers are not comparable with published ones, and the result says so.

VQA accuracy follows PythonEvaluationTools/vqaEvaluation/vqaEval.py of GT-Vision-Lab/VQA (the code
EvalAI's VQAv2 server runs): the prediction gets the punctuation, digit, article and contraction
rules; the ten human answers get the punctuation rule only, and only when they are not all the
same; a question scores the mean over the ten leave-one-out subsets of min(1, matches / 3); overall
and per answer type it reports 100 x the mean rounded to 2 decimals (`round(..., n)` with n = 2).
TextVQA's evaluator (mmf's m4c_evaluators.py, TextVQAAccuracyEvaluator) differs in one point: it
normalises every human answer as it does the prediction (rule="textvqa").
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKENIZERS = ("ptb", "python")
JAVA_MISSING = ("tokenizer='ptb' (the COCO toolkit's PTB tokenizer and METEOR are Java programs) needs java, "
                "which is not on PATH; install Java 8+ (e.g. apt-get install default-jre-headless), or pass "
                "--tokenizer python (tokenizer='python') for the Python tokenization, not comparable with "
                "published numbers")
# The Stanford CoreNLP jars SPICE needs, which pycocoevalcap's get_stanford_models downloads on first use.
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


# --- captions ---------------------------------------------------------------------------------------

def python_tokenize(text: str) -> str:
    """The Python fallback tokenization: lowercase, every non-word character a space, words joined by one."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def caption_scores(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]], *,
                   tokenizer: str = "ptb") -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE of one caption per image against its references,
    keyed as COCOEvalCap names them (Bleu_1 ... SPICE), as fractions (the toolkit prints them to 3
    decimals). SPICE is None with "spice_skipped" giving the reason when it cannot run; METEOR the
    same ("meteor_skipped") when tokenizer='python' runs without Java."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer {tokenizer!r} is unknown; pass one of {', '.join(TOKENIZERS)}")
    keys = _scored_keys(predictions, references)
    toolkit = _toolkit()
    java = shutil.which("java") is not None
    if tokenizer == "ptb":
        if not java:
            raise ValueError(JAVA_MISSING)
        ptb = toolkit["PTBTokenizer"]()
        gts = ptb.tokenize({k: [{"caption": c} for c in references[k]] for k in keys})
        res = ptb.tokenize({k: [{"caption": predictions[k]}] for k in keys})
    else:
        gts = {k: [python_tokenize(c) for c in references[k]] for k in keys}
        res = {k: [python_tokenize(predictions[k])] for k in keys}
    bleu, _ = toolkit["Bleu"](4).compute_score(gts, res, verbose=0)
    result: dict[str, Any] = {f"Bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)}
    result["METEOR"] = _meteor(toolkit["Meteor"], gts, res) if java else None
    if not java:
        result["meteor_skipped"] = "METEOR skipped: it is a Java program and java is not on PATH"
        log.warning(result["meteor_skipped"])
    result["ROUGE_L"] = float(toolkit["Rouge"]().compute_score(gts, res)[0])
    result["CIDEr"] = float(toolkit["Cider"]().compute_score(gts, res)[0])
    result["SPICE"], skipped = _spice(toolkit["Spice"], gts, res, java)
    if skipped:
        result["spice_skipped"] = skipped
        log.warning(skipped)
    result |= {"tokenizer": tokenizer, "n_images": len(keys)}
    return result


def _scored_keys(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]]) -> list[Any]:
    unknown = [k for k in predictions if k not in references]
    if unknown:
        raise ValueError(f"{len(unknown)} predictions have no references (first: {unknown[0]!r}); "
                         "score predictions against the annotations they were made for")
    keys = [k for k in references if k in predictions]
    if not keys:
        raise ValueError("no predictions to score; predict the dataset's images first")
    empty = [k for k in keys if not references[k]]
    if empty:
        raise ValueError(f"image {empty[0]!r} has no reference captions (a test split?); "
                         "write its results file for the evaluation server instead")
    return keys


def _toolkit() -> dict[str, Any]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.spice.spice import Spice
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise ValueError("caption metrics need the COCO caption toolkit; pip install pycocoevalcap "
                         "(or pip install 'git-scratch[eval]')") from None
    return {"Bleu": Bleu, "Cider": Cider, "Meteor": Meteor, "Rouge": Rouge, "Spice": Spice,
            "PTBTokenizer": PTBTokenizer}


def _meteor(meteor_class: type, gts: dict, res: dict) -> float:
    meteor = meteor_class()
    try:
        return float(meteor.compute_score(gts, res)[0])
    finally:  # its Java process would otherwise live until garbage collection
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


def _spice(spice_class: type, gts: dict, res: dict, java: bool) -> tuple[float | None, str | None]:
    if not java:
        return None, "SPICE skipped: it is a Java program and java is not on PATH"
    import pycocoevalcap.spice as spice_package

    lib = Path(spice_package.__file__).parent / "lib"
    missing = [jar for jar in SPICE_JARS if not (lib / jar).is_file()]
    if missing:
        # Spice() would try to download them (nlp.stanford.edu), which fails or hangs offline.
        return None, (f"SPICE skipped: {lib / missing[0]} is missing (Stanford CoreNLP 3.6.0, which pycocoevalcap "
                      "downloads on first use); fetch it once with internet access: python -c 'from "
                      "pycocoevalcap.spice.get_stanford_models import get_stanford_models as g; g()'")
    try:
        return float(spice_class().compute_score(gts, res)[0]), None
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        return None, f"SPICE skipped: its Java run failed ({' '.join(str(e).split())})"


# --- VQA accuracy -------------------------------------------------------------------------------------

# The official tables (vqaEval.py): contractions restored, number words to digits, articles dropped.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: "(?!<=" is a lookahead, as in the official code
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official code calls periodStrip.sub("", text, re.UNICODE): the flag lands in `count`, so at most
# 32 periods are removed. Kept, so that answers with more periods score as they do there.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """The official punctuation rule. A mark next to a space, or any mark in a text holding a digit
    comma digit, is deleted; otherwise it becomes a space. The test reads the original text."""
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official word rule: lowercase, number words to digits, articles dropped, contractions restored."""
    words = [NUMBERS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """What the official evaluation does to a predicted answer before comparing it."""
    return process_digit_article(process_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def textvqa_answer(answer: str) -> str:
    """TextVQA's rule (the EvalAIAnswerProcessor of mmf's m4c_evaluators.py, which TextVQA's evaluation
    runs on the prediction and on every human answer): lowercase, commas and question marks dropped,
    "'s" split off, then the VQA punctuation and word rules."""
    answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize_answer(answer)


VQA_RULES = ("vqav2", "textvqa")


def vqa_accuracy(prediction: str, references: Sequence[str], rule: str = "vqav2") -> float:
    """One question's accuracy in [0, 1]. Ten answers: the official leave-one-out min(1, matches / 3);
    a single reference (MSRVTT-QA, a manifest line): exact match, both sides normalised.
    rule "vqav2" is vqaEval.py's treatment of the answers, "textvqa" the TextVQA evaluator's."""
    if rule not in VQA_RULES:
        raise ValueError(f"VQA rule {rule!r} is unknown; pass one of {', '.join(VQA_RULES)}")
    if not references:
        raise ValueError("a question without reference answers cannot be scored; score a split with answers")
    if rule == "textvqa":
        answer, refs = textvqa_answer(prediction), [textvqa_answer(r) for r in references]
    elif len(references) == 1:
        answer, refs = normalize_answer(prediction), [normalize_answer(references[0])]
    else:
        # vqaEval.py cleans the human answers' punctuation only when they disagree, and never applies
        # the digit/article rule to them (the dataset's answers were normalised when collected).
        answer = normalize_answer(prediction)
        refs = [process_punctuation(r) for r in references] if len(set(references)) > 1 else list(references)
    if len(refs) == 1:
        return float(answer == refs[0])
    subsets = [min(1.0, sum(r == answer for j, r in enumerate(refs) if j != i) / 3) for i in range(len(refs))]
    return sum(subsets) / len(subsets)


def vqa_scores(predictions: Mapping[Any, str], items: Sequence[Any], *, rule: str = "vqav2") -> dict[str, Any]:
    """Accuracy over the items (evaluation.datasets.EvalItem) that have a prediction, overall and by
    answer type, in percent rounded to 2 decimals as the official evaluation reports them.
    rule: "vqav2" (VQAv2, MSRVTT-QA) or "textvqa" (TextVQA's evaluator normalises every answer)."""
    known = {item.key for item in items}
    unknown = [k for k in predictions if k not in known]
    if unknown:
        raise ValueError(f"{len(unknown)} predictions are for questions not in the dataset (first: {unknown[0]!r}); "
                         "score predictions against the annotations they were made for")
    answered = [item for item in items if item.key in predictions]
    if not answered:
        raise ValueError("no predictions to score; predict the dataset's questions first")
    if any(not item.references for item in answered):
        raise ValueError("these questions have no reference answers (a test split?); write the submission "
                         "file (write_vqa_results) for the evaluation server instead")
    by_type: dict[str, list[float]] = {}
    scores = []
    for item in answered:
        scores.append(vqa_accuracy(predictions[item.key], item.references, rule))
        if item.answer_type is not None:
            by_type.setdefault(item.answer_type, []).append(scores[-1])
    return {"accuracy": _percent(scores),
            "accuracy_by_type": {name: _percent(values) for name, values in by_type.items()},
            "n_questions": len(scores), "n_by_type": {name: len(values) for name, values in by_type.items()},
            "n_unanswered": len(items) - len(answered), "rule": rule,
            "unit": "percent, rounded to 2 decimals as the official VQA evaluation reports it"}


def _percent(scores: Sequence[float]) -> float:
    return round(100 * float(sum(scores)) / len(scores), 2)
