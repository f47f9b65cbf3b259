"""What caption and vqa print: several files for vqa, and a note when the model said nothing.

Checkpoints are tiny random GITs in our own layout with the word-level tokenizer (no
transformers needed); one is biased so that a chosen token always wins, which makes the
model, not the tool, produce an empty caption.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT, GitTokenizer, ImageProcessor, load_image
from git_scratch.cli import main
from tests.conftest import tiny_config

WORDS = [f"w{i}" for i in range(95)]  # word-level ids 4..98 fill the tiny vocabulary of 99
PAD, BOS, EOS = 0, 2, 3  # the word-level tokenizer's [PAD], [CLS], [SEP]


def make_checkpoint(path: Path, always: int | None = None) -> Path:
    """A tiny checkpoint; `always`: a token id the LM head always picks."""
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(pad_id=PAD, bos_id=BOS, eos_id=EOS, init_std=0.5))
    if always is not None:
        with torch.no_grad():
            model.lm_head.bias[always] = 1e4
    model.save_pretrained(path)
    GitTokenizer.word_level(WORDS).save_pretrained(path)
    ImageProcessor(size=32, crop_size=32).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    out = {"ckpt": make_checkpoint(root / "ckpt"), "eos_first": make_checkpoint(root / "eos", always=EOS),
           "pads": make_checkpoint(root / "pads", always=PAD)}
    for name, size in (("a.png", (40, 56)), ("b.png", (33, 30)), ("c.png", (64, 48))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)
        out[name] = root / name
    return out


QUESTIONS = ["w5 w6 w7", "w8", "what is w9 ?"]  # different lengths: left padding; "what" is [UNK]
SHORT = ["--max-new-tokens", "5"]


def library_answer(ckpt: Path, image: Path, question: str) -> str:
    """The library, one file and one question at a time, through generate and the prompt."""
    model, tokenizer = GIT.from_pretrained(ckpt), GitTokenizer.from_pretrained(ckpt)
    pixel_values = ImageProcessor.from_pretrained(ckpt)([load_image(image)])
    prompt = tokenizer.prompt_ids(question)
    ids = model.generate(pixel_values, torch.tensor([prompt]), max_new_tokens=5)
    return tokenizer.decode_answer(ids[0], prompt)


def test_vqa_asks_each_question_about_each_file(files: dict[str, Path], monkeypatch, capsys) -> None:
    ckpt = files["ckpt"]
    model = GIT.from_pretrained(ckpt)
    monkeypatch.setattr(GIT, "from_pretrained", classmethod(lambda cls, *a, **kw: model))
    calls = []
    model.vision.register_forward_hook(lambda *_: calls.append(1))
    images = [files["a.png"], files["b.png"], files["c.png"]]
    assert main(["vqa", str(ckpt), *map(str, images), *(f"-q={q}" for q in QUESTIONS), *SHORT]) == 0
    assert len(calls) == len(images)  # one image encoding per file, shared by its questions
    out, _ = capsys.readouterr()
    monkeypatch.undo()
    rows = [line.split("\t") for line in out.splitlines()]
    expected = [[str(f), q, library_answer(ckpt, f, q)] for f in images for q in QUESTIONS]
    assert rows == expected
    assert len({answer for *_, answer in rows}) > 1  # random weights, yet not one answer for all: a real check


def test_vqa_one_file_keeps_its_format(files: dict[str, Path], capsys) -> None:
    ckpt, image = files["ckpt"], files["a.png"]
    assert main(["vqa", str(ckpt), str(image), *(f"-q={q}" for q in QUESTIONS), *SHORT]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows == [[q, library_answer(ckpt, image, q)] for q in QUESTIONS]
    assert main(["vqa", str(ckpt), str(image), str(files["b.png"]), "-q", "w8", "--json", *SHORT]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["question"]) for r in records] == [(str(image), "w8"), (str(files["b.png"]), "w8")]


def test_vqa_stops_at_an_unreadable_file_before_loading(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["vqa", str(files["ckpt"]), str(files["a.png"]), str(tmp_path), "-q", "w8"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"git-scratch: error: {tmp_path} is a directory; pass image or video files, " \
                                f"e.g. {tmp_path / '*.jpg'}\n"


def test_an_empty_caption_says_the_model_made_it(files: dict[str, Path], capsys) -> None:
    images = [files["a.png"], files["b.png"]]
    assert main(["caption", str(files["eos_first"]), *map(str, images), *SHORT]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{f}\t" for f in images]  # one line per file, as always
    assert err.splitlines() == [
        f"git-scratch: note: {f}: the model generated no words (its first token was [SEP], the end of the text); "
        "the empty caption is its output, not an error" for f in images]


def test_an_empty_answer_says_the_model_made_it(files: dict[str, Path], capsys) -> None:
    assert main(["vqa", str(files["pads"]), str(files["a.png"]), "-q", "w5 w6", "-q", "w8", *SHORT]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["w5 w6\t", "w8\t"]
    assert err.splitlines() == [
        f"git-scratch: note: {files['a.png']}: question {q!r}: the model generated no words (only special tokens: "
        "[PAD] [PAD] [PAD] [PAD] [PAD]); the empty answer is its output, not an error" for q in ("w5 w6", "w8")]
    assert main(["vqa", str(files["eos_first"]), str(files["a.png"]), "-q", "w8", "--json", *SHORT]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"] == "" and "its first token was [SEP]" in err and err.count("\n") == 1
