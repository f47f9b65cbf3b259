"""The original's training-text truncation (max_text_len 40) as a data option, against the original's own ids.

tests/original/fixtures/truncation.json holds what the original's train.get_data returned (caption_tokens,
need_predict) for questions and answers around 40 tokens, with a BERT tokenizer over a word vocabulary
in GitTokenizer.word_level's id order (made by scripts/original_reference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from git_scratch.data.manifest import IGNORE, ManifestDataset, tokens_and_labels
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.training import loop
from git_scratch.training.loop import TrainConfig
from tests.training.test_train import make_data, run

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "original" / "fixtures" / "truncation.json").read_text())
TOKENIZER = GitTokenizer.word_level(FIXTURE["words"])


def words(case: dict) -> str:
    return f"{len(case['prefix'].split())}+{len(case['target'].split())}"


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=words)
def test_tokens_and_labels_equal_the_originals(case: dict) -> None:
    assert (TOKENIZER.bos_id, TOKENIZER.eos_id) == (FIXTURE["cls"], FIXTURE["sep"])
    ids, labels = tokens_and_labels(TOKENIZER, case["prefix"] or None, case["target"], max_text_len=40)
    assert ids == case["caption_tokens"]
    # need_predict 1 is a label; its 0 (the [CLS] and the question) is our IGNORE
    assert labels == [t if p else IGNORE for t, p in zip(case["caption_tokens"], case["need_predict"])]


def test_without_max_text_len_nothing_is_cut() -> None:
    long = next(c for c in FIXTURE["cases"] if len(c["prefix"].split()) == 45)
    ids, _ = tokens_and_labels(TOKENIZER, long["prefix"], long["target"])
    assert len(ids) == 45 + 5 + 2


def test_train_passes_max_text_len_to_the_data(tmp_path: Path, monkeypatch) -> None:
    seen = []

    def dataset(*args, **kwargs):
        seen.append(kwargs.get("max_text_len"))
        return ManifestDataset(*args, **kwargs)

    monkeypatch.setattr(loop, "ManifestDataset", dataset)
    run(make_data(tmp_path, n=4), tmp_path / "run", steps=1, warmup_steps=0, max_text_len=4)
    assert seen == [4]
    assert TrainConfig().max_text_len is None  # off unless asked for
