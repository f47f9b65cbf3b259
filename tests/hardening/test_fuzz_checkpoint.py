"""Checkpoint loading, fuzzed: damaged model.safetensors and config.json files through the CLI.

Each case builds a checkpoint directory from a tiny saved model with one kind of damage and runs
`git-scratch convert SRC DST` in-process (convert is the command that reads config.json and every
weight, then writes). A case passes when either the damage was harmless (exit 0, DST loads), or
the user got exactly one documented error line naming the damaged file, no traceback, exit 2,
and nothing was written: SRC is byte-for-byte unchanged and neither DST nor a temporary directory
exists. Hypothesis runs derandomized (the same cases on every machine) with no example database.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.torch import load, save

from git_scratch import GIT
from git_scratch.checkpoints.hub import FIELD_MAP, REQUIRED_VALUES, VISION_FIELD_MAP
from tests.conftest import tiny_config
from tests.hardening.support import CASES, Run, error_line, fresh_dir, fuzz, remove, run_cli, snapshot

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn]
OTHER_DTYPES = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool]


class Checkpoint:
    """The pristine files, and the runner every case goes through."""

    def __init__(self, root: Path) -> None:
        torch.manual_seed(0)
        GIT.from_config(tiny_config()).save_pretrained(root / "pristine")
        self.root = root
        self.config = json.loads((root / "pristine" / "config.json").read_text())
        self.weights = (root / "pristine" / "model.safetensors").read_bytes()
        self.tensors = load(self.weights)
        self.header_end = 8 + int.from_bytes(self.weights[:8], "little")

    def files(self, *, config: Any = None, weights: bytes | None = None) -> dict[str, bytes]:
        config_bytes = config if isinstance(config, bytes) else json.dumps(config or self.config).encode()
        return {"config.json": config_bytes, "model.safetensors": self.weights if weights is None else weights}

    def convert(self, files: dict[str, bytes], kind: str | None) -> tuple[Run, Path]:
        """Run convert on a directory holding `files`; check the run's contract; return the run and SRC."""
        if kind:
            CASES[kind] += 1
        src = fresh_dir(self.root, files)
        dst = src.with_name(src.name + "-out")
        before = snapshot(src)
        run = run_cli("convert", src, dst)
        try:
            assert snapshot(src) == before  # nothing written into SRC, whatever happened
            leftovers = [p.name for p in self.root.iterdir() if p.name.startswith(f".{dst.name}")]
            assert leftovers == []  # no temporary directory left behind
            if run.code == 0:
                assert run.err == "" and GIT.from_pretrained(dst) is not None
            else:
                error_line(run)
                assert not dst.exists()
        finally:
            remove(src)
            remove(dst)
        return run, src


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return Checkpoint(tmp_path_factory.mktemp("fuzz"))


def weights_error(run: Run, src: Path, *needles: str) -> None:
    assert run.code == 2
    error_line(run, str(src / "model.safetensors"), *needles)


# --- model.safetensors -------------------------------------------------------------------------


@fuzz(30)
@given(fraction=st.floats(0, 1, exclude_max=True))
@example(fraction=0.0)
def test_truncated_anywhere(ckpt: Checkpoint, fraction: float) -> None:
    cut = int(fraction * len(ckpt.weights))
    run, src = ckpt.convert(ckpt.files(weights=ckpt.weights[:cut]), "model.safetensors truncated")
    weights_error(run, src, "damaged or truncated")


@fuzz(50)
@given(data=st.data())
def test_corrupted_header_bytes(ckpt: Checkpoint, data: st.DataObject) -> None:
    """Random bytes over the length prefix and the JSON header. Some edits are harmless (a
    space in the padding, a letter of the metadata); the others must fail in one line."""
    damaged = bytearray(ckpt.weights)
    edits = data.draw(st.lists(st.tuples(st.integers(0, ckpt.header_end - 1), st.integers(0, 255)),
                               min_size=1, max_size=4))
    for position, value in edits:
        damaged[position] = value
    run, src = ckpt.convert(ckpt.files(weights=bytes(damaged)), "model.safetensors header corrupted")
    if run.code:
        weights_error(run, src)


@fuzz(25)
@given(data=st.data())
def test_wrong_dtype(ckpt: Checkpoint, data: st.DataObject) -> None:
    """Floating-point weights of any precision load (cast to the requested dtype); integer or
    bool tensors where a weight belongs are refused, naming the key and its dtype."""
    key = data.draw(st.sampled_from(sorted(ckpt.tensors)))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES + OTHER_DTYPES))
    tensors = dict(ckpt.tensors)
    tensors[key] = tensors[key].to(dtype)
    run, src = ckpt.convert(ckpt.files(weights=save(tensors)), "model.safetensors wrong dtype")
    if dtype in FLOAT_DTYPES:
        assert run.code == 0, run.err
    else:
        weights_error(run, src, f"{key} has dtype {str(dtype).removeprefix('torch.')}, not a floating-point type")


@fuzz(25)
@given(data=st.data())
def test_wrong_shape(ckpt: Checkpoint, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(ckpt.tensors)))
    shape = list(ckpt.tensors[key].shape)
    change = data.draw(st.sampled_from(["grow", "shrink", "add axis", "drop axis", "scalar"]))
    axis = data.draw(st.integers(0, len(shape) - 1))
    if change == "grow":
        shape[axis] += data.draw(st.integers(1, 5))
    elif change == "shrink":
        shape[axis] = data.draw(st.integers(0, shape[axis] - 1))
    elif change == "add axis":
        shape.insert(axis, data.draw(st.integers(1, 3)))
    elif change == "drop axis":
        shape.pop(axis)
    else:
        shape = []
    tensors = dict(ckpt.tensors)
    tensors[key] = torch.zeros(shape)
    run, src = ckpt.convert(ckpt.files(weights=save(tensors)), "model.safetensors wrong shape")
    if shape == list(ckpt.tensors[key].shape):  # e.g. a single axis dropped then nothing changed
        assert run.code == 0
    else:
        weights_error(run, src, f"{key} has shape {tuple(shape)}")


KEY_NAME = st.from_regex(r"[a-z]{1,6}(\.[a-z0-9]{1,6}){0,3}", fullmatch=True)


@fuzz(25)
@given(data=st.data())
def test_missing_and_extra_keys(ckpt: Checkpoint, data: st.DataObject) -> None:
    names = sorted(ckpt.tensors)
    dropped = data.draw(st.sets(st.sampled_from(names), max_size=4))
    extra = data.draw(st.sets(KEY_NAME.filter(lambda k: k not in ckpt.tensors), max_size=3))
    if not dropped and not extra:
        dropped = {names[0]}
    tensors = {k: v for k, v in ckpt.tensors.items() if k not in dropped} | {k: torch.zeros(2) for k in extra}
    run, src = ckpt.convert(ckpt.files(weights=save(tensors)), "model.safetensors missing or extra keys")
    weights_error(run, src, *dropped, *extra)


def test_every_key_missing_still_gives_a_readable_line(ckpt: Checkpoint) -> None:
    """An empty state dict: hundreds of missing keys, named up to ten and counted after that."""
    run, src = ckpt.convert(ckpt.files(weights=save({"x": torch.zeros(1)})), "model.safetensors missing or extra keys")
    weights_error(run, src, "missing", "more", "unexpected x")
    assert len(run.err) < 2000


# --- config.json -------------------------------------------------------------------------------

FIELDS = ([hf for hf, _ in FIELD_MAP] + [f"vision_config.{hf}" for hf, _ in VISION_FIELD_MAP]
          + [f"vision_config.{name}" if section else name for section, name in REQUIRED_VALUES]
          + ["model_type", "vision_config", "architectures", "torch_dtype"])
JSON_VALUE = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 5, 7, 48, 1023, 2**20 + 1, 10**12, 2**64]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "git", "bert", "gelu", "mish", "absolute", "48", "relative_key"]),
    st.text(max_size=6),
    st.lists(st.integers(-3, 120), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-2, 2), max_size=2),
)


def edited_config(base: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(base))
    for field, value in edits.items():
        section, _, name = field.rpartition(".")
        block = config.setdefault("vision_config", {}) if section else config
        if section and not isinstance(block, dict):
            continue  # an earlier edit replaced vision_config itself
        block[name] = value
    return config


def config_case(ckpt: Checkpoint, edits: dict[str, Any]) -> None:
    """One damaged config: `info` (config only) and `convert` (config and weights) each succeed
    or print one line; when the config itself is refused, both name config.json."""
    text = json.dumps(edited_config(ckpt.config, edits)).encode()  # NaN, Infinity as json (and transformers) write them
    CASES["config.json field values"] += 1
    src = fresh_dir(ckpt.root, ckpt.files(config=text))
    info = run_cli("info", src)
    if info.code:
        error_line(info, str(src / "config.json"))
    remove(src)
    run, src = ckpt.convert(ckpt.files(config=text), None)
    if info.code:
        error_line(run, str(src / "config.json"))
    elif run.code:  # a valid config, of another shape than the weights
        error_line(run, str(src / "model.safetensors"), "does not fit its config.json")


@fuzz(100)
@given(edits=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUE, min_size=1, max_size=3))
@example(edits={"num_attention_heads": 5})  # heads do not divide the hidden size
@example(edits={"vision_config.num_attention_heads": 3})
@example(edits={"num_hidden_layers": 0})
@example(edits={"hidden_size": -48})
@example(edits={"intermediate_size": -1})
@example(edits={"vocab_size": 2**64})
@example(edits={"num_hidden_layers": 10**12})  # would build modules for hours
@example(edits={"layer_norm_eps": math.nan})
@example(edits={"hidden_dropout_prob": 1.5})
@example(edits={"model_type": "bert"})
@example(edits={"tie_word_embeddings": "yes"})
@example(edits={"num_image_with_embedding": 2.5})
@example(edits={"max_position_embeddings": 64.0})
@example(edits={"eos_token_id": [2, 3]})
@example(edits={"vision_config": None})
@example(edits={"vision_config.image_size": [32, 16]})
def test_config_field_values(ckpt: Checkpoint, edits: dict[str, Any]) -> None:
    config_case(ckpt, edits)


NOT_A_CONFIG = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "not JSON": b"model_type = git\n",
    "cut short": b'{"model_type": "git", "hidden_size": 4',
    "a list": b"[1, 2, 3]",
    "a string": b'"git"',
    "null": b"null",
    "latin-1": '{"model_type": "gît"}'.encode("latin-1"),
    "UTF-16": '{"model_type": "git"}'.encode("utf-16"),
    "binary": bytes(range(256)),
    "nested 100000 deep": b"[" * 100_000,
    "another model type": json.dumps({"model_type": "llama", "hidden_size": 4096}).encode(),
    "vision model only": json.dumps({"model_type": "git_vision_model"}).encode(),
}


@pytest.mark.parametrize("content", NOT_A_CONFIG.values(), ids=NOT_A_CONFIG.keys())
def test_config_file_that_is_not_a_git_config(ckpt: Checkpoint, content: bytes) -> None:
    src = fresh_dir(ckpt.root, ckpt.files(config=content))
    error_line(run_cli("info", src), str(src / "config.json"))
    remove(src)
    run, src = ckpt.convert(ckpt.files(config=content), "config.json not a GIT config")
    error_line(run, str(src / "config.json"))


def test_shard_index_damage(ckpt: Checkpoint) -> None:
    """A sharded checkpoint whose index is broken in the ways a bad download breaks it."""
    tensors = ckpt.tensors
    indexes = {
        "not JSON": b"{",
        "no weight_map": b"{}",
        "weight_map a list": b'{"weight_map": []}',
        "file names that are numbers": json.dumps({"weight_map": {k: 1 for k in tensors}}).encode(),
        "a shard that is missing": json.dumps({"weight_map": {k: "gone.safetensors" for k in tensors}}).encode(),
    }
    for name, index in indexes.items():
        files = {"config.json": json.dumps(ckpt.config).encode(), "model.safetensors.index.json": index}
        run, src = ckpt.convert(files, "model.safetensors.index.json damaged")
        error_line(run, str(src))
