"""clean_up_tokenization_spaces: decoding tidies "don ' t" into "don't" as tokenizer_config.json says.

The reference is transformers' BertTokenizerFast loaded from the same directory, with the flag
true, false and absent, in both layouts a checkpoint ships (tokenizer.json saved by transformers,
and vocab.txt alone). Absent, we read BERT's own default, true; transformers 5.x's
tokenizers-backed class reads false, and the test shows that difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from git_scratch import GitProcessor
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from tests.data.test_tokenizer import TEXTS, write_vocab

transformers = pytest.importorskip("transformers")

SENTENCE = "don't it's we're, isn't it?"
TIDY = SENTENCE
SPACED = "don ' t it ' s we ' re, isn ' t it?"
FLAGS = {"true": True, "false": False, "absent": None}


def checkpoint(directory: Path, flag: bool | None, layout: str) -> Path:
    """vocab.txt alone, or the tokenizer.json + tokenizer_config.json transformers saves; the flag set or removed."""
    write_vocab(directory)
    if layout == "tokenizer.json":
        transformers.BertTokenizer.from_pretrained(directory, do_lower_case=True).save_pretrained(directory)
        (directory / "vocab.txt").unlink()
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config.pop("clean_up_tokenization_spaces", None)
    if flag is not None:
        config["clean_up_tokenization_spaces"] = flag
    config_file.write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.txt"])
@pytest.mark.parametrize("flag", FLAGS)
def test_decode_matches_transformers_for_each_flag(tmp_path: Path, flag: str, layout: str) -> None:
    directory = checkpoint(tmp_path, FLAGS[flag], layout)
    ours = GitTokenizer.from_pretrained(directory)
    theirs = transformers.BertTokenizerFast.from_pretrained(directory)
    clean_up = FLAGS[flag] is not False  # absent: BERT's default, true
    assert ours.clean_up_tokenization_spaces is clean_up
    ids = theirs(SENTENCE)["input_ids"]
    assert ours.encode(SENTENCE) == ids[1:-1]
    assert ours.decode(ids) == (TIDY if clean_up else SPACED)
    # Specials kept on both sides: with skip_special_tokens ours keeps [UNK] and transformers' drops it.
    sequences = [theirs(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    expected = [theirs.decode(row, clean_up_tokenization_spaces=clean_up) for row in sequences]
    assert ours.batch_decode(sequences, skip_special_tokens=False) == expected
    assert [ours.decode(row, skip_special_tokens=False) for row in sequences] == expected
    if FLAGS[flag] is not None:  # transformers reads the file's own flag the same way
        assert [theirs.decode(row) for row in sequences] == expected
    else:  # the one difference: transformers 5.x reads a missing flag as false
        assert theirs.decode(ids, skip_special_tokens=True) == SPACED


def test_answers_and_captions_have_no_spaced_apostrophes(tmp_path: Path) -> None:
    """The 2022 official files: tokenizer.json with the flag true."""
    tok = GitTokenizer.from_pretrained(checkpoint(tmp_path, True, "tokenizer.json"))
    generated = tok.encode(SENTENCE) + [tok.eos_id, tok.pad_id]
    assert tok.decode_answer(generated) == TIDY
    prompt = tok.prompt_ids("what is this?")
    assert tok.decode_answer([tok.pad_id] + prompt + generated, prompt) == TIDY
    assert GitProcessor(ImageProcessor(), tok).batch_decode([[tok.bos_id] + generated]) == [TIDY]


@pytest.mark.parametrize("flag", [True, False])
def test_save_writes_the_flag_so_transformers_decodes_our_files_the_same(tmp_path: Path, flag: bool) -> None:
    tok = GitTokenizer.from_pretrained(checkpoint(tmp_path / "in", flag, "vocab.txt"))
    tok.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["clean_up_tokenization_spaces"] is flag
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tok.prompt_ids(SENTENCE)
    assert theirs.decode(ids, skip_special_tokens=True) == tok.decode(ids) == (TIDY if flag else SPACED)
    assert GitTokenizer.from_pretrained(tmp_path / "out").clean_up_tokenization_spaces is flag


def test_word_level_keeps_its_exact_round_trip(tmp_path: Path) -> None:
    words = GitTokenizer.word_level(["what", "is", "this", "?"])
    assert words.decode(words.encode("what is this ?")) == "what is this ?"
    words.save_pretrained(tmp_path)
    assert GitTokenizer.from_pretrained(tmp_path).decode(words.encode("what is this ?")) == "what is this ?"


def test_a_flag_that_is_not_a_bool_is_one_line(tmp_path: Path) -> None:
    directory = write_vocab(tmp_path, config={"clean_up_tokenization_spaces": "yes"})
    with pytest.raises(ValueError) as error:
        GitTokenizer.from_pretrained(directory)
    message = str(error.value)
    assert str(directory / "tokenizer_config.json") in message and "clean_up_tokenization_spaces" in message
    assert "\n" not in message and "; " in message
