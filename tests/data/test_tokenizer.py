"""GitTokenizer against transformers' BertTokenizer, on a WordPiece vocabulary written here.

No download: the test writes a vocab.txt of a few hundred entries, transformers saves it in the
official tokenizer.json layout, and GitTokenizer must give the same ids and the same text over a
few hundred generated strings. transformers 5 folded BertTokenizerFast into BertTokenizer (the
name is an alias) and ignores a `vocab_file=` argument, so the reference is built from the
directory or from `vocab=`.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from git_scratch.data.tokenizer import GitTokenizer

# Specials at BERT's relative order but not at ids 0-3, so a hard-coded id cannot pass.
SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """a an the of on in at to and or is are was be this that what which who where how many
    color colour red blue green yellow black white small large big little left right above below
    next square circle triangle cat dog man woman person people child sitting standing walking
    play run jump eat drink read write look see show sign street road car bus train plane bike
    table chair bed room kitchen window door house building tree grass sky water beach snow
    field park city food pizza cake banana apple orange sandwich plate cup bowl glass phone
    computer book clock picture photo image there here two three four one some with near front
    behind top bottom side holding wearing shirt hat umbrella ball game tennis baseball player
    team sport horse cow sheep bird elephant giraffe zebra bear kite boat surf board ski cafe
    naive resume hello world""".split()
SUFFIXES = ["##s", "##es", "##ing", "##ed", "##er", "##ly", "##est", "##ness", "##tion", "##'s"]
# Reachable only when accents are kept (cased, or strip_accents=False).
ACCENTED = ["café", "naïve", "über", "résumé", "élan"]
CHINESE = ["中", "文", "字", "##文"]
VOCAB = list(dict.fromkeys(  # dict.fromkeys: "a" is both a letter and a word; keep one
    SPECIALS + list(string.punctuation) + list(string.digits) + list(string.ascii_lowercase)
    + ["##" + c for c in string.ascii_lowercase + string.digits] + WORDS + SUFFIXES + ACCENTED + CHINESE))

PIECES = (WORDS + [w.upper() for w in WORDS[:20]] + [w.title() for w in WORDS[20:40]]
          + ["cats", "Playing", "jumped", "bigger", "quickly", "dog's", "tables", "biggest"]  # ## suffixes
          + ["xyzzy", "qwfp", "zzzzz", "Ωmega"]  # unknown
          + ["Café", "NAÏVE", "über", "re\u0301sume\u0301", "Élan", "ﬁeld"]  # accents, combining, ligature
          + ["!", "?!", "...", "(", ")", "'", "\"", "—", "«»", "$5", "3.14", "#1", "@", "a-b", "c/d"]
          + ["中文", "字中", "中文字test", "日本"]  # CJK split per character, unknown ones -> [UNK]
          + ["🙂", "\x00", "\x07", "\u200b", "x" * 101, "ab" * 60])  # emoji, controls, >100-char words
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", ""]


def make_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "\n\t  ", "Hello, WORLD!!", "what color is the square?", "[CLS] what [SEP] is",
             "A  small\tRED circle,left of a blue square.", " ".join(rng.choices(WORDS, k=700))]
    for _ in range(n):
        parts = rng.choices(PIECES, k=rng.randint(1, 12))
        body = "".join(p + rng.choice(SEPARATORS) for p in parts)
        texts.append(rng.choice(["", " ", "\n"]) + body + rng.choice(["", "  ", "\t"]))
    return texts


TEXTS = make_texts()


def write_vocab(directory: Path, vocab: list[str] = VOCAB, config: dict[str, object] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reference(transformers, tmp_path_factory):
    """transformers' tokenizer built from vocab.txt, as BertTokenizerFast was in transformers 4."""
    directory = write_vocab(tmp_path_factory.mktemp("vocab"))
    return transformers.BertTokenizer.from_pretrained(directory, do_lower_case=True)


@pytest.fixture(scope="module")
def official_dir(reference, tmp_path_factory) -> Path:
    """A directory in the official layout: tokenizer.json + tokenizer_config.json written by transformers."""
    directory = tmp_path_factory.mktemp("official")
    reference.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tok(official_dir) -> GitTokenizer:
    return GitTokenizer.from_pretrained(official_dir)


def mismatches(ours: Callable[[str], list[int]], theirs: Callable[[str], list[int]], texts: list[str]) -> list[str]:
    return [f"{t!r}: ours {a} transformers {b}" for t in texts if (a := ours(t)) != (b := theirs(t))]


# --- parity with transformers ------------------------------------------------------------------


def test_special_ids_come_from_the_vocab(tok, reference):
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (7, 8, 0, 6)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (
        reference.cls_token_id, reference.sep_token_id, reference.pad_token_id, reference.unk_token_id)
    assert tok.vocab_size == len(reference) == len(VOCAB)


def test_encode_matches_transformers(tok, reference):
    bad = mismatches(tok.encode, lambda t: reference(t, add_special_tokens=False).input_ids, TEXTS)
    assert not bad, f"{len(bad)} of {len(TEXTS)} differ, e.g.\n" + "\n".join(bad[:5])


def test_prompt_is_cls_then_question_without_sep(tok, reference):
    assert tok.prompt_ids() == [reference.cls_token_id]
    bad = mismatches(tok.prompt_ids,
                     lambda t: [reference.cls_token_id] + reference(t, add_special_tokens=False).input_ids, TEXTS)
    assert not bad, "\n".join(bad[:5])


def test_decode_matches_transformers(tok, reference):
    """Equal to transformers, except that skip_special_tokens keeps [UNK] (transformers drops it):
    our text is transformers' for the ids with [CLS], [SEP] and [PAD] taken out by hand. The files
    transformers 5 saved carry no clean_up_tokenization_spaces, which we read as BERT's true
    (test_clean_up.py), so the reference is asked for the clean-up."""
    sequences = [[tok.pad_id, tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in TEXTS]
    theirs = {False: [reference.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=True)
                      for ids in sequences],
              True: [reference.decode([i for i in ids if i not in (tok.pad_id, tok.bos_id, tok.eos_id)],
                                      skip_special_tokens=False, clean_up_tokenization_spaces=True)
                     for ids in sequences]}
    for skip in (True, False):
        assert [tok.decode(ids, skip_special_tokens=skip) for ids in sequences] == theirs[skip]
        assert tok.batch_decode(sequences, skip_special_tokens=skip) == theirs[skip]
    with_unk = [ids for ids in sequences if tok.unk_id in ids]
    assert with_unk and all("[UNK]" in tok.decode(ids) for ids in with_unk)
    assert not any("[UNK]" in reference.decode(ids, skip_special_tokens=True) for ids in with_unk)


def test_call_matches_transformers(tok, reference):
    """tokenizer(text) as transformers' tokenizer, less token_type_ids (GIT has no token types);
    test_git_processor.py covers padding, truncation and return_tensors."""
    bad = mismatches(lambda t: tok(t).input_ids, lambda t: reference(t).input_ids, TEXTS)
    assert not bad, "\n".join(bad[:5])
    batch = tok(TEXTS[:20], padding=True, return_tensors="pt")
    expected = reference(TEXTS[:20], padding=True, return_tensors="pt")
    assert list(batch) == ["input_ids", "attention_mask"]
    assert torch.equal(batch.input_ids, expected.input_ids)
    assert torch.equal(batch.attention_mask, expected.attention_mask)
    for kwargs, needle in [({"padding": "max_length"}, "pass max_length=N"), ({"padding": "yes"}, "padding = 'yes'"),
                           ({"truncation": True, "max_length": 1}, "leaves no room"),
                           ({"max_length": 0}, "max_length = 0"), ({"padding_side": "top"}, "padding_side = 'top'")]:
        with pytest.raises(ValueError, match=needle):
            tok("a cat", **kwargs)
    for text in (None, 3, [], ["a", None]):
        message = one_line_error(ValueError, tok, text)
        assert "text" in message


FALLBACK_CONFIGS = {
    "no-config": None,
    "uncased": {"do_lower_case": True, "model_max_length": 512},  # what microsoft/git-base ships
    "cased": {"do_lower_case": False},
    "keep-accents": {"do_lower_case": True, "strip_accents": False},
    "no-chinese-split": {"do_lower_case": True, "tokenize_chinese_chars": False},
}


@pytest.mark.parametrize("config", FALLBACK_CONFIGS.values(), ids=FALLBACK_CONFIGS.keys())
def test_vocab_txt_fallback_matches_transformers(config, transformers, tmp_path):
    directory = write_vocab(tmp_path, config=config)
    ours = GitTokenizer.from_pretrained(directory)
    flags = {k: v for k, v in (config or {}).items() if k != "model_max_length"}
    reference = transformers.BertTokenizer(vocab=str(directory / "vocab.txt"), **flags)
    bad = mismatches(ours.encode, lambda t: reference(t, add_special_tokens=False).input_ids, TEXTS)
    assert not bad, f"{len(bad)} of {len(TEXTS)} differ, e.g.\n" + "\n".join(bad[:5])


def test_vocab_txt_fallback_equals_tokenizer_json(tok, tmp_path):
    fallback = GitTokenizer.from_pretrained(write_vocab(tmp_path))
    assert [fallback.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    assert json.loads(fallback.backend.to_str()) == json.loads(tok.backend.to_str())


def test_specials_named_in_tokenizer_config(tmp_path):
    vocab = ["<pad>", "<unk>", "<s>", "</s>", "hello", "world"]
    config = {"cls_token": {"content": "<s>", "__type": "AddedToken"}, "sep_token": "</s>",
              "pad_token": "<pad>", "unk_token": "<unk>"}
    tok = GitTokenizer.from_pretrained(write_vocab(tmp_path, vocab, config))
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (2, 3, 0, 1)
    assert tok.prompt_ids("Hello there") == [2, 4, 1]
    assert tok.decode([2, 4, 5, 3, 0]) == "hello world"


@pytest.mark.parametrize("source", ["official", *FALLBACK_CONFIGS])
def test_save_pretrained_loads_in_transformers(source, tok, transformers, tmp_path):
    if source != "official":
        tok = GitTokenizer.from_pretrained(write_vocab(tmp_path / "src", config=FALLBACK_CONFIGS[source]))
    tok.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"

    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    bad = mismatches(tok.encode, lambda t: theirs(t, add_special_tokens=False).input_ids, TEXTS)
    assert not bad, "\n".join(bad[:5])
    assert theirs("a cat").input_ids == [tok.bos_id] + tok.encode("a cat") + [tok.eos_id]
    if source == "uncased":
        assert theirs.model_max_length == 512
    again = GitTokenizer.from_pretrained(tmp_path / "saved")
    assert [again.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]


# --- word level (the synthetic demo) -----------------------------------------------------------

DEMO = "a small red circle left of a blue square"


@pytest.fixture
def words() -> GitTokenizer:
    return GitTokenizer.word_level(DEMO.split() + ["what", "color", "is", "the", "?", "green"])


def test_word_level_vocab_order(words):
    vocab = words.backend.get_vocab()
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]",
        "?", "a", "blue", "circle", "color", "green", "is", "left", "of", "red", "small", "square", "the", "what"]
    assert (words.pad_id, words.unk_id, words.bos_id, words.eos_id) == (0, 1, 2, 3)
    assert words.vocab_size == 18


def test_word_level_round_trip(words):
    ids = words.encode(DEMO)
    assert ids == [5, 14, 13, 7, 11, 12, 5, 6, 15]
    assert words.decode(ids) == DEMO
    assert words.encode("  A Small\tRED circle  ") == [5, 14, 13, 7]
    assert words.encode("what color is the circle?") == [17, 8, 10, 16, 7, 4]
    assert words.encode("a purple circle") == [5, words.unk_id, 7]
    assert words.decode([2] + ids + [3, 0, 0]) == DEMO


def test_word_level_save_pretrained_loads_in_transformers(words, transformers, tmp_path):
    words.save_pretrained(tmp_path)
    texts = [DEMO, "What COLOR is the square?", "a purple circle", "", "red,blue"]
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [theirs(t, add_special_tokens=False).input_ids for t in texts] == [words.encode(t) for t in texts]
    again = GitTokenizer.from_pretrained(tmp_path)
    assert [again.encode(t) for t in texts] == [words.encode(t) for t in texts]
    assert again.decode(again.encode(DEMO)) == DEMO


@pytest.mark.parametrize("bad", ["Red", "blue square", "left-of", ""])
def test_word_level_rejects_unreachable_words(bad):
    with pytest.raises(ValueError, match="single lowercase word"):
        GitTokenizer.word_level(["a", bad])


# --- prompts and answers -----------------------------------------------------------------------


def test_batch_prompts_pad_on_the_left(words):
    input_ids, attention_mask = words.batch_prompts([None, "what color is the square?", "a red"])
    assert input_ids.dtype == attention_mask.dtype == torch.long
    torch.testing.assert_close(input_ids, torch.tensor([
        [0, 0, 0, 0, 0, 0, 2],            # captioning: [CLS] alone
        [2, 17, 8, 10, 16, 15, 4],        # [CLS] what color is the square ?  (no [SEP])
        [0, 0, 0, 0, 2, 5, 13],           # [CLS] a red
    ]))
    torch.testing.assert_close(attention_mask, torch.tensor([
        [0, 0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1],
    ]))


def test_decode_answer_cuts_after_the_prompt_of_a_left_padded_row(words):
    questions = ["what color is the square?", "a"]
    input_ids, _ = words.batch_prompts(questions)  # row 1 is [PAD] x 5, [CLS] a
    generated = torch.cat([input_ids, torch.tensor([[6, 3, 0], [13, 7, 3]])], dim=1)  # model output
    # The prompt as the question's own ids, or as the padded row of input_ids: the same cut.
    assert [words.decode_answer(row, words.prompt_ids(q)) for row, q in zip(generated, questions)] == [
        "blue", "red circle"]
    assert [words.decode_answer(row, prompt) for row, prompt in zip(generated, input_ids)] == ["blue", "red circle"]
    # Generated ids alone (what answer() returns) need no prompt.
    assert words.decode_answer(generated[1, input_ids.shape[1]:]) == "red circle"
    assert words.decode_answer([3, 13]) == ""
    # A length cannot say where a left-padded row's prompt ends: the old prompt_len=len(question)
    # cut inside the padding here. Refused, as is a prompt the row does not start with.
    with pytest.raises(ValueError, match="is a length") as e:
        words.decode_answer(generated[1], len(words.prompt_ids("a")))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not start with its prompt"):
        words.decode_answer(generated[1], words.prompt_ids("what color is the square?"))
    with pytest.raises(ValueError, match="no token but padding"):
        words.decode_answer(generated[1], [words.pad_id, words.pad_id])


def test_unknown_text_stays_visible(words):
    """[UNK] survives skip_special_tokens, and an id past the tokenizer's vocabulary (a model
    with a larger one can generate it) is shown, not skipped as tokenizers would."""
    assert words.decode([2, 5, words.unk_id, 13, 3, 0]) == "a [UNK] red"
    assert words.decode_answer([5, words.unk_id, 3, 0]) == "a [UNK]"
    assert words.backend.decode([5, 500, 13]) == "a red"  # the backend alone drops it silently
    assert words.decode([5, 500, 13]) == "a [UNK id 500] red"
    assert words.decode([500]) == "[UNK id 500]" and words.decode([2**40]) == f"[UNK id {2**40}]"
    assert words.batch_decode(torch.tensor([[5, 500], [13, 3]])) == ["a [UNK id 500]", "red"]


def test_text_input_rules(words):
    assert words.encode("") == []
    assert words.prompt_ids("") == [words.bos_id]
    assert words.encode("a red circle".encode()) == words.encode("a red circle")
    for bad in [b"a \xff red", "a \udcff red", None, 3]:
        with pytest.raises(ValueError) as e:
            words.encode(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="negative"):
        words.decode([5, -100])


# --- errors ------------------------------------------------------------------------------------


def one_line_error(exc_type: type[Exception], fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(exc_type) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_directory_and_files(tmp_path):
    message = one_line_error(FileNotFoundError, GitTokenizer.from_pretrained, tmp_path / "nope")
    assert str(tmp_path / "nope") in message and "tokenizer.json" in message
    message = one_line_error(FileNotFoundError, GitTokenizer.from_pretrained, tmp_path)
    assert str(tmp_path) in message and "vocab.txt" in message


def test_corrupt_files(official_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPi')
    message = one_line_error(ValueError, GitTokenizer.from_pretrained, tmp_path)
    assert str(tmp_path / "tokenizer.json") in message

    (tmp_path / "tokenizer.json").write_bytes((official_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    message = one_line_error(ValueError, GitTokenizer.from_pretrained, tmp_path)
    assert str(tmp_path / "tokenizer_config.json") in message

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"cls_token": "<s>"}))
    message = one_line_error(ValueError, GitTokenizer.from_pretrained, tmp_path)
    assert "'<s>'" in message and "cls_token" in message



def test_original_prompt_is_the_originals_truncation(tok, reference):
    """GenerativeImage2Text's inference.py makes its VQA prompt with the BERT tokenizer, `truncation=True,
    add_special_tokens=False, max_length=40`, then keeps the payload's last 38 tokens after [CLS]; the
    same call on transformers' tokenizer is the reference. 10, 38, 39, 40 and 45 words, and longer."""
    for n in (10, 38, 39, 40, 45, 90):
        question = " ".join(WORDS[i % len(WORDS)] for i in range(n))
        payload = reference(question, truncation=True, add_special_tokens=False, max_length=40)["input_ids"]
        if len(payload) > 38:
            payload = payload[-38:]
        assert tok.original_prompt_ids(question) == [tok.bos_id] + payload
        assert (tok.original_prompt_ids(question) == tok.prompt_ids(question)) == (n <= 38)
