"""Evaluation: generate for every example of a manifest, then score.

- captions: exact match, and BLEU-4 and CIDEr-D from pycocoevalcap (the COCO caption toolkit)
  when it is installed (`pip install pycocoevalcap`). Tokenization: lowercase, punctuation
  removed, split on whitespace, in Python; COCO's PTB tokenizer needs Java, which we avoid.
- questions: VQAv2 accuracy with the official answer normalisation (punctuation, digits,
  articles, contractions): min(#matching reference answers / 3, 1), averaged over the ten
  leave-one-out subsets when a line carries ten "answers"; one reference gives exact match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.manifest import Example, ManifestDataset, read_manifest
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..generation.prefix import encode_prefix
from ..generation.search import generate
from ..model.git import GIT


@torch.no_grad()
def predict(model: GIT, dataset: ManifestDataset, *, batch_size: int = 64, num_beams: int = 1,
            max_new_tokens: int = 20, progress: bool = False) -> list[str | None]:
    """The model's caption or answer for every example (None where the file was bad). Examples
    about the same image are batched together and share one image prefix."""
    examples, tokenizer = dataset.examples, dataset.tokenizer
    device = model.lm_head.weight.device
    outputs: list[str | None] = [None] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: str(examples[i].media))
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="eval", unit="batch"):
        rows, images, slot = [], [], {}
        for i in order[start:start + batch_size]:
            media = examples[i].media
            if media not in slot:
                pixels = dataset.pixel_values(examples[i])
                slot[media] = len(images) if pixels is not None else None
                if pixels is not None:
                    images.append(pixels)
            if slot[media] is not None:
                rows.append(i)
        if not rows:
            continue
        prefix = encode_prefix(model, torch.stack(images).to(device))
        image_index = torch.tensor([slot[examples[i].media] for i in rows], device=device)
        input_ids, attention_mask = tokenizer.batch_prompts([examples[i].prompt for i in rows])
        out = generate(model, None, input_ids, attention_mask, prefix=prefix, image_index=image_index,
                       num_beams=num_beams, max_new_tokens=max_new_tokens)
        for i, ids in zip(rows, out.tolist()):
            outputs[i] = tokenizer.decode_answer(ids[input_ids.shape[1]:])  # the prompt columns cut off
    return outputs


def score(examples: Sequence[Example], predictions: Sequence[str | None],
          references: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """Metrics for captions and questions separately; `references` default to each target."""
    refs = references or [[ex.target] for ex in examples]
    caps = [(p, r) for ex, p, r in zip(examples, predictions, refs) if ex.prompt is None and p is not None]
    qas = [(p, r) for ex, p, r in zip(examples, predictions, refs) if ex.prompt is not None and p is not None]
    result: dict[str, Any] = {"n_captions": len(caps), "n_questions": len(qas),
                              "n_failed": sum(p is None for p in predictions)}
    if caps:
        result["caption_exact_match"] = sum(_words(p) in {_words(r) for r in rs} for p, rs in caps) / len(caps)
        result |= coco_caption_metrics([p for p, _ in caps], [rs for _, rs in caps])
    if qas:
        result["vqa_accuracy"] = sum(vqa_accuracy(p, rs) for p, rs in qas) / len(qas)
    return result


def coco_caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return {}
    res = {i: [_words(p)] for i, p in enumerate(predictions)}
    gts = {i: [_words(r) for r in rs] for i, rs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# --- VQAv2 accuracy (the official evaluation's normalisation) -----------------------------------

_CONTRACTIONS = {"aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
                 "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
                 "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll",
                 "hows": "how's", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itll": "it'll",
                 "lets": "let's", "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't",
                 "mustve": "must've", "neednt": "needn't", "shant": "shan't", "shed": "she'd", "shes": "she's",
                 "shouldve": "should've", "shouldnt": "shouldn't", "thats": "that's", "thered": "there'd",
                 "theres": "there's", "theyd": "they'd", "theyll": "they'll", "theyre": "they're",
                 "theyve": "they've", "wasnt": "wasn't", "wed": "we'd", "weve": "we've", "werent": "weren't",
                 "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
                 "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
                 "whod": "who'd", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
                 "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
                 "wouldnt": "wouldn't", "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're",
                 "youve": "you've"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
    answer = original = answer.replace("\n", " ").replace("\t", " ").strip()
    for p in _PUNCT:  # as the official code: the test reads the original text, not the edited one
        if (p + " " in original or " " + p in original) or re.search(_COMMA_STRIP, original) is not None:
            answer = answer.replace(p, "")
        else:
            answer = answer.replace(p, " ")
    answer = _PERIOD_STRIP.sub("", answer)
    words = []
    for word in answer.lower().split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    refs = [normalize_answer(r) for r in references]
    if len(refs) < 2:
        return float(bool(refs) and pred == refs[0])
    scores = [min(1.0, sum(pred == r for j, r in enumerate(refs) if j != i) / 3) for i in range(len(refs))]
    return sum(scores) / len(scores)


def evaluate(model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, manifest: str, *,
             batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 20,
             progress: bool = False) -> dict[str, Any]:
    """Score a model on a manifest; lines may carry "answers": [...] (VQAv2) or "captions": [...]."""
    return score(*predict_manifest(model, tokenizer, processor, manifest, batch_size=batch_size,
                                   num_beams=num_beams, max_new_tokens=max_new_tokens, progress=progress))


def predict_manifest(model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, manifest: str, *,
                     batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 20, progress: bool = False,
                     ) -> tuple[list[Example], list[str | None], list[list[str]]]:
    """(examples, predictions, references) of a manifest: what `score` takes, and what a list
    of predictions shows (git-scratch eval --predictions)."""
    examples = read_manifest(manifest)
    dataset = ManifestDataset(examples, processor, tokenizer, num_frames=model.cfg.n_frames)
    predictions = predict(model, dataset, batch_size=batch_size, num_beams=num_beams,
                          max_new_tokens=max_new_tokens, progress=progress)
    return examples, predictions, _references(manifest, examples)


def _references(manifest: str, examples: Sequence[Example]) -> list[list[str]]:
    lines = Path(manifest).read_text(errors="replace").splitlines()
    refs = []
    for ex in examples:
        record = json.loads(lines[ex.line - 1])
        extra = record.get("answers") if ex.prompt is not None else record.get("captions")
        refs.append([str(a) for a in extra] if isinstance(extra, list) and extra else [ex.target])
    return refs

