"""Evaluation: generate for every example of a manifest, then score.

- captions: exact match, and BLEU-4 and CIDEr-D from pycocoevalcap (the COCO caption toolkit)
  when it is installed (`pip install pycocoevalcap`), over evaluation.metrics' Python tokenization
  (lowercase, punctuation removed), which needs no Java and is fast enough for held-out checks
  during training; published numbers use the PTB tokenizer (evaluation.metrics.caption_scores).
- questions: the official VQAv2 accuracy (evaluation.metrics.vqa_accuracy): min(#matching
  reference answers / 3, 1), averaged over the ten leave-one-out subsets when a line carries ten
  "answers"; one reference gives exact match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.manifest import Example, ManifestDataset, read_manifest
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..evaluation.metrics import normalize_answer, python_tokenize, vqa_accuracy  # noqa: F401 (re-exported)
from ..generation.prefix import encode_prefix
from ..generation.search import generate
from ..model.git import GIT


@torch.no_grad()
def predict(model: GIT, dataset: ManifestDataset, *, batch_size: int = 64, num_beams: int = 1,
            max_new_tokens: int = 20, progress: bool = False, **generate_kwargs: Any) -> list[str | None]:
    """The model's caption or answer for every example (None where the file was bad). Examples
    about the same image are batched together and share one image prefix. `generate_kwargs`
    (semantics, length_penalty, ...) go to `generate` as they are."""
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
                       num_beams=num_beams, max_new_tokens=max_new_tokens, **generate_kwargs)
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
        words = python_tokenize
        result["caption_exact_match"] = sum(words(p) in {words(r) for r in rs} for p, rs in caps) / len(caps)
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
    res = {i: [python_tokenize(p)] for i, p in enumerate(predictions)}
    gts = {i: [python_tokenize(r) for r in rs] for i, rs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def evaluate(model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, manifest: str, *,
             batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 20,
             progress: bool = False) -> dict[str, Any]:
    """Score a model on a manifest; lines may carry "answers": [...] (VQAv2) or "captions": [...]."""
    return score(*predict_manifest(model, tokenizer, processor, manifest, batch_size=batch_size,
                                   num_beams=num_beams, max_new_tokens=max_new_tokens, progress=progress))


def predict_manifest(model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, manifest: str, *,
                     batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 20, progress: bool = False,
                     **generate_kwargs: Any) -> tuple[list[Example], list[str | None], list[list[str]]]:
    """(examples, predictions, references) of a manifest: what `score` takes, and what a list
    of predictions shows (git-scratch eval --predictions)."""
    examples = read_manifest(manifest)
    dataset = ManifestDataset(examples, processor, tokenizer, num_frames=model.cfg.n_frames)
    predictions = predict(model, dataset, batch_size=batch_size, num_beams=num_beams,
                          max_new_tokens=max_new_tokens, progress=progress, **generate_kwargs)
    return examples, predictions, _references(manifest, examples)


def _references(manifest: str, examples: Sequence[Example]) -> list[list[str]]:
    lines = Path(manifest).read_text(errors="replace").splitlines()
    refs = []
    for ex in examples:
        record = json.loads(lines[ex.line - 1])
        extra = record.get("answers") if ex.prompt is not None else record.get("captions")
        refs.append([str(a) for a in extra] if isinstance(extra, list) and extra else [ex.target])
    return refs

