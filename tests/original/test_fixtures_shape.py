"""The original-decoding fixtures are well formed: every case says what it ran and holds what the original returned.

This checks the format only (and that tests/original/weights.py still regenerates the very weights
and pixels the fixtures were made from); comparing git_scratch's decoding with them is the job of
the tests of `generate(..., semantics="original")`. The fixtures come from
scripts/original_decoding_reference.py (scripts/original_reference.md says how to rerun it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.original.weights import checksum, make_pixels, make_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = ["decoding_small.json", "decoding_base.json"]
SEARCH_FIELDS = {"beam": {"beam_size", "length_penalty", "max_steps"}, "greedy": {"max_steps"},
                 "trie": {"answers", "max_steps"}}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=NAMES)
def fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_header_names_its_source(fixture: dict[str, Any]) -> None:
    assert fixture["original_commit"] == "faae4fb"
    assert fixture["special_ids"] == {"cls": 101, "sep": 102, "pad": 0}
    assert fixture["weights"]["function"] == "tests/original/weights.py:make_weights"
    assert set(fixture["decoder"]) == {"vocab_size", "hidden_size", "num_layers", "attention_heads",
                                       "feedforward_size"}


def test_layouts_are_ordered_state_dicts(fixture: dict[str, Any]) -> None:
    for model in fixture["models"].values():
        keys = [entry["key"] for entry in model["layout"]]
        assert len(keys) == len(set(keys))
        shapes = {entry["key"]: entry["shape"] for entry in model["layout"]}
        for position, entry in enumerate(model["layout"]):
            if "tied_to" in entry:  # the LM head shares the word embeddings
                assert keys.index(entry["tied_to"]) < position
                assert shapes[entry["tied_to"]] == entry["shape"]
        assert shapes["textual.output.weight"] == [fixture["decoder"]["vocab_size"], fixture["decoder"]["hidden_size"]]
        frames = model["param"].get("num_image_with_embedding", 0)
        assert sum(key.startswith("img_temperal_embedding.") for key in keys) == frames


def test_weights_and_pixels_regenerate(fixture: dict[str, Any]) -> None:
    rule = fixture["weights"]
    for name, model in fixture["models"].items():
        weights = make_weights(model["layout"], model["weight_seed"], rule["std"], rule["norm_std"])
        assert checksum(weights) == pytest.approx(model["weights_checksum"], rel=1e-9), name
    for case in fixture["cases"]:
        pixels = make_pixels(case["pixel_shape"], case["pixel_seed"], fixture["pixels"]["block"])
        assert checksum([pixels]) == pytest.approx(case["pixels_checksum"], rel=1e-9), case["name"]


def test_every_case_holds_what_the_original_returned(fixture: dict[str, Any]) -> None:
    vocab, sep = fixture["decoder"]["vocab_size"], fixture["special_ids"]["sep"]
    names = [case["name"] for case in fixture["cases"]]
    assert len(names) == len(set(names))
    for case in fixture["cases"]:
        search, prompt = case["search"], case["prompt"]
        assert set(search) == SEARCH_FIELDS[search["kind"]] | {"kind"}, case["name"]
        assert case["model"] in fixture["models"]
        batch = case["pixel_shape"][0]
        assert len(case["predictions"]) == len(case["logprobs"]) == len(case["rows"]) == batch
        assert 1 <= case["steps"] <= search["max_steps"]
        assert case["same_tokens_in_fp64"], f"{case['name']}: tokens change in fp64, too close to a tie to test"
        for row in case["predictions"]:
            assert all(0 <= t < vocab for t in row)
            if search["kind"] == "beam":  # GeneratorWithBeamSearch returns max_steps ids, [SEP]-filled
                assert len(row) == search["max_steps"] - (len(prompt) if prompt else 0)
                first = row.index(sep)
                assert row[first:] == [sep] * (len(row) - first)
            else:
                assert len(row) <= search["max_steps"] - (len(prompt) if prompt else 0)


def test_first_step_logits_for_two_cases(fixture: dict[str, Any]) -> None:
    logged = [case for case in fixture["cases"] if "first_step_logits" in case]
    assert len(logged) == 2
    assert any(case["prompt"] for case in logged) and any(not case["prompt"] for case in logged)
    for case in logged:
        record = case["first_step_logits"]
        assert record["shape"] == [1, fixture["decoder"]["vocab_size"]]
        assert len(record["ids"]) == len(record["values"])


def test_the_cases_cover_the_original_rules() -> None:
    cases = [case for name in NAMES for case in load(name)["cases"]]
    kinds = {case["search"]["kind"] for case in cases}
    widths = {case["search"]["beam_size"] for case in cases if case["search"]["kind"] == "beam"}
    penalties = {case["search"]["length_penalty"] for case in cases if case["search"]["kind"] == "beam"}
    frames = {case["pixel_shape"][1] for case in cases if len(case["pixel_shape"]) == 5}
    rows = [row for case in cases for row in case["rows"]]
    assert kinds == {"beam", "greedy", "trie"}
    assert widths == {1, 2, 3, 4} and penalties == {0.6, 1.0, 2.0} and frames == {3, 6}
    assert any(case["prompt"] and case["pixel_shape"][-2] == 480 for case in cases)
    assert any(case["search"].get("max_steps") == 1024 for case in cases)
    assert any(row["hit_max_steps"] for row in rows) and any(not row["hit_max_steps"] for row in rows)
    assert any(row["generated"] == 0 for row in rows)  # an empty caption, the length penalty's doing
