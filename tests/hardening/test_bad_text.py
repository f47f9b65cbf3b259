"""Text as users give it: prompts too long for the position table, empty questions, bytes that
are not UTF-8, token budgets that overflow. Each is refused in one line before any vision work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from git_scratch import GIT
from git_scratch.cli.common import check_prompt_length
from git_scratch.data.manifest import read_manifest
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.generation.search import check_generation_inputs
from tests.conftest import tiny_config
from tests.hardening.support import CASES, check_message, error_line, fuzz, make_checkpoint, run_cli

CFG = tiny_config()  # 64 text positions


@fuzz(150)
@given(n_prompt=st.integers(1, 90), pad=st.integers(0, 5), max_new=st.integers(1, 100))
def test_prompt_plus_new_tokens_must_fit_the_position_table(n_prompt: int, pad: int, max_new: int) -> None:
    """Refused exactly when the longest real prompt plus max_new_tokens exceeds max_positions,
    and the fix the CLI's message proposes is one that passes."""
    CASES["prompt length x max_new_tokens pairs"] += 1
    input_ids = torch.ones(2, pad + n_prompt, dtype=torch.long)
    mask = torch.ones_like(input_ids)
    mask[:, :pad] = 0
    mask[1, : pad + n_prompt - 1] = 0  # a second, shorter row: the longest row decides
    fits = n_prompt + max_new <= CFG.max_positions
    if fits:
        check_generation_inputs(CFG, input_ids, mask, max_new_tokens=max_new)
        check_prompt_length(n_prompt, max_new, CFG, "a question")
        return
    with pytest.raises(ValueError) as library:
        check_generation_inputs(CFG, input_ids, mask, max_new_tokens=max_new)
    check_message(str(library.value), f"{n_prompt} tokens", f"max_new_tokens = {max_new}")
    with pytest.raises(ValueError) as cli:
        check_prompt_length(n_prompt, max_new, CFG, "a question")
    check_message(str(cli.value), "a question")
    room = CFG.max_positions - n_prompt
    if room > 0:  # the message proposes --max-new-tokens `room`; it must then fit
        assert f"--max-new-tokens to {room}" in str(cli.value)
        check_prompt_length(n_prompt, room, CFG, "a question")
    else:
        assert "shorten it" in str(cli.value) and "max-new-tokens" not in str(cli.value).split(";")[-1]


@pytest.fixture(scope="module")
def model() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(CFG).eval()


def vision_calls(model: GIT) -> list[int]:
    calls = [0]
    model.vision.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


BAD_GENERATE = {
    "prompt longer than the table": ({"input_ids": torch.ones(1, 70, dtype=torch.long)}, "exceeds the model's 64"),
    "prompt + new tokens overflow": ({"input_ids": torch.ones(1, 60, dtype=torch.long), "max_new_tokens": 5},
                                     "exceeds the model's 64"),
    "max_new_tokens 10**18": ({"max_new_tokens": 10**18}, "exceeds the model's 64"),
    "max_new_tokens 0": ({"max_new_tokens": 0}, "must be at least 1"),
    "max_new_tokens 2.5": ({"max_new_tokens": 2.5}, "must be an integer"),
    "all-padding row": ({"input_ids": torch.ones(2, 3, dtype=torch.long),
                         "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 0]])},
                        "row 1 of attention_mask is all padding"),
    "empty prompt": ({"input_ids": torch.ones(1, 0, dtype=torch.long)}, "T >= 1"),
    "1-D prompt": ({"input_ids": torch.ones(5, dtype=torch.long)}, "expected (B, T)"),
}


@pytest.mark.parametrize("case", BAD_GENERATE, ids=BAD_GENERATE)
def test_generate_refuses_before_the_image_is_encoded(model: GIT, case: str) -> None:
    kwargs, needle = BAD_GENERATE[case]
    calls = vision_calls(model)
    CASES["bad generate / answer arguments"] += 1
    with pytest.raises(ValueError) as refused:
        model.generate(torch.randn(1, 3, 32, 32), **kwargs)
    check_message(str(refused.value), needle)
    assert calls[0] == 0


def test_answer_refuses_before_the_image_is_encoded(model: GIT) -> None:
    calls = vision_calls(model)
    CASES["bad generate / answer arguments"] += 2
    with pytest.raises(ValueError) as too_long:
        model.answer(torch.randn(1, 3, 32, 32), [[1, 5], [1] + [5] * 70])
    check_message(str(too_long.value), "exceeds the model's 64")
    with pytest.raises(ValueError) as overflow:
        model.answer(torch.randn(1, 3, 32, 32), [[1, 5]], max_new_tokens=10**9)
    check_message(str(overflow.value), "exceeds the model's 64")
    assert calls[0] == 0


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "red.png")
    return make_checkpoint(root / "ckpt")


@pytest.mark.parametrize("question", ["", "   ", "\t\n"], ids=["empty", "spaces", "tab-newline"])
def test_empty_question(ckpt: Path, question: str) -> None:
    CASES["CLI text: empty, not UTF-8, overflowing"] += 1
    error_line(run_cli("vqa", ckpt, ckpt.parent / "red.png", "-q", "w1", "-q", question), "has no words")


def test_question_bytes_that_are_not_utf8(ckpt: Path) -> None:
    """On POSIX, argv bytes that are not UTF-8 reach Python as lone surrogates ("café" in Latin-1)."""
    CASES["CLI text: empty, not UTF-8, overflowing"] += 1
    message = error_line(run_cli("vqa", ckpt, ckpt.parent / "red.png", "-q", "caf\udce9"), "not valid UTF-8")
    assert message.startswith("question 'caf\\udce9'")


@pytest.mark.parametrize("flags", [["--max-new-tokens", str(10**18)], ["--max-new-tokens", "64"]])
def test_max_new_tokens_that_overflow(ckpt: Path, flags: list[str]) -> None:
    CASES["CLI text: empty, not UTF-8, overflowing"] += 2
    error_line(run_cli("caption", ckpt, ckpt.parent / "red.png", *flags), "use at most 63")
    question = " ".join(["w1"] * 40)  # 41 tokens with [CLS]: 23 positions left
    error_line(run_cli("vqa", ckpt, ckpt.parent / "red.png", "-q", question, *flags), "--max-new-tokens to 23")


LATIN1 = "caf\xe9".encode("latin-1")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "preprocessor_config.json",
                                  "config.json"])
def test_checkpoint_text_files_that_are_not_utf8(ckpt: Path, tmp_path: Path, name: str) -> None:
    """Each text file of a checkpoint in another encoding: one line naming that file."""
    import shutil

    damaged = shutil.copytree(ckpt, tmp_path / "ckpt")
    if name == "vocab.txt":  # read only when there is no tokenizer.json
        (damaged / "tokenizer.json").unlink()
        (damaged / name).write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n" + LATIN1 + b"\n")
    else:
        original = (damaged / name).read_bytes()
        (damaged / name).write_bytes(original[:-3] + LATIN1 + original[-3:])
    CASES["CLI text: checkpoint files not UTF-8"] += 1
    error_line(run_cli("caption", damaged, ckpt.parent / "red.png"), str(damaged / name))


def test_manifest_lines_that_are_not_utf8_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = json.dumps({"image": "a.png", "caption": "a black square"}).encode()
    lines = [good, b'{"image": "a.png", "caption": "caf' + b"\xe9" + b'"}',  # Latin-1
             b'{"image": "a.png", "caption": "\\ud800 lone surrogate"}', b"[" * 10_000, good, good, good]
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    CASES["manifest lines not UTF-8 or not JSON"] += 3
    with caplog.at_level(logging.WARNING, logger="git_scratch"):
        examples = read_manifest(tmp_path / "m.jsonl")
    assert [ex.line for ex in examples] == [1, 5, 6, 7]
    warned = [r.getMessage() for r in caplog.records]
    assert [w.split(":")[1] for w in warned] == ["2", "3", "4"]  # path:line: reason; skipped
    assert "not UTF-8" in warned[0] and "surrogate" in warned[1] and "nested too deeply" in warned[2]


def test_tokenizer_refuses_text_that_is_not_utf8() -> None:
    tokenizer = GitTokenizer.word_level(["a"])
    CASES["CLI text: empty, not UTF-8, overflowing"] += 2
    for text in (LATIN1, "caf\udce9"):
        with pytest.raises(ValueError) as refused:
            tokenizer.prompt_ids(text)
        check_message(str(refused.value), "UTF-8")
