"""semantics="original": Microsoft's GenerativeImage2Text decoding, token for token, against what its own code returned.

tests/original/fixtures/decoding_{small,base}.json hold the original's outputs (commit faae4fb) on random
weights: greedy (AutoRegressiveBeamSearch, beam 1), beam search (GeneratorWithBeamSearch) and the trie
decoder (TrieAutoRegressiveBeamSearch), made by scripts/original_decoding_reference.py (rerun as
scripts/original_reference.md says). The weights are not stored: tests/original/weights.py rebuilds them from
the recorded layout and seed, they are saved as the original saves a model.pt, and loaded through
checkpoints/original.py's key map.

How our return maps onto the original's (`as_original`):
- the original's `max_steps` counts the prompt: max_new_tokens = max_steps - prompt length;
- a caption's prompt is [CLS], which the original returns in front of the caption as we do; a VQA prompt
  ([CLS] + question) is cut off the original's ids (`CaptioningModel.infer`): we cut it too;
- greedy whose every row's first token is [SEP] returns [[SEP]] alone in the original (no prompt);
- beam search returns max_steps ids in both, [SEP]-filled; greedy [SEP]-fills rows that ended.
The original's beam search at beam size 1 (per node 2, no ban) is not what generate's num_beams=1 runs
(the original's greedy): its cases run search.beam_search with K = 1 directly (`beam_of_one`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from git_scratch import GIT
from git_scratch.checkpoints.original import EMBED_NORM_EPS, load_original
from git_scratch.config import GitConfig, VisionConfig
from git_scratch.generation.constrain import classify
from git_scratch.generation.prefix import encode_prefix, prefill
from git_scratch.generation.search import SEMANTICS, TORCH, beam_search, generate, make_processor
from tests.conftest import tiny_config
from tests.original.weights import checksum, make_pixels, make_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = ["decoding_small.json", "decoding_base.json"]
LOADED = {name: json.loads((FIXTURES / name).read_text(encoding="utf-8")) for name in NAMES}
SLOW = {"decoding_base.json"}  # the git-base decoder (30522 x 768, 6 layers): seconds per case
LONG = 80  # textual-head calls from which a small case takes seconds too (the 120- to 1024-step searches)


def params() -> list[Any]:
    return [pytest.param(name, case["name"], id=case["name"],
                         marks=[pytest.mark.slow] if name in SLOW or case["steps"] >= LONG else [])
            for name in NAMES for case in LOADED[name]["cases"]]


def fixture_config(fixture: dict[str, Any], model: dict[str, Any]) -> GitConfig:
    """Our config of a fixture's model: the decoder and ViT sizes it records, the variant's image side and frames."""
    decoder, vit, param = fixture["decoder"], fixture["vision"], model["param"]
    positions = next(e["shape"][0] for e in model["layout"] if e["key"] == "textual.embedding.positions.weight")
    vision = VisionConfig(image_size=param.get("test_crop_size", vit["input_resolution"]), patch_size=vit["patch_size"],
                          d_model=vit["width"], n_layer=vit["layers"], n_head=vit["heads"], d_ff=4 * vit["width"])
    return GitConfig(vocab_size=decoder["vocab_size"], d_model=decoder["hidden_size"], n_layer=decoder["num_layers"],
                     n_head=decoder["attention_heads"], d_ff=decoder["feedforward_size"], max_positions=positions,
                     n_frames=param.get("num_image_with_embedding"), embed_norm_eps=EMBED_NORM_EPS, vision=vision)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """(fixture file, model name) -> GIT, each built once: regenerated weights saved as a model.pt and loaded."""
    built: dict[tuple[str, str], GIT] = {}

    def get(name: str, model_name: str) -> GIT:
        if (name, model_name) not in built:
            fixture, model = LOADED[name], LOADED[name]["models"][model_name]
            weights = make_weights(model["layout"], model["weight_seed"], fixture["weights"]["std"],
                                   fixture["weights"]["norm_std"])
            assert checksum(weights) == pytest.approx(model["weights_checksum"], rel=1e-9)
            path = tmp_path_factory.mktemp("original") / "model.pt"
            torch.save({"model": weights}, path)
            built[name, model_name] = load_original(path, config=fixture_config(fixture, model), fast=False)
        return built[name, model_name]

    return get


def case_of(name: str, case_name: str) -> dict[str, Any]:
    return next(case for case in LOADED[name]["cases"] if case["name"] == case_name)


def counting(calls: list[int]):
    """TORCH with its decode_step counted: the original runs its textual head once per step."""
    def decode_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return TORCH.decode_step(*args, **kwargs)
    return replace(TORCH, decode_step=decode_step)


def as_original(sequences: torch.Tensor, n_prompt: int, *, vqa: bool, greedy: bool, sep: int) -> list[list[int]]:
    """Our ids (B, prompt + new) as the original returns them (see the module docstring)."""
    if greedy and bool((sequences[:, n_prompt] == sep).all()):  # the original's "empty captions" early return
        sequences = sequences[:, n_prompt:n_prompt + 1]
    return (sequences[:, n_prompt:] if vqa else sequences).tolist()


def run_case(models, name: str, case: dict[str, Any]) -> tuple[Any, Any, int]:
    """Our decoding of a fixture case under semantics="original": ids as the original returns them,
    the score beside them, and the number of textual-head calls."""
    fixture = LOADED[name]
    model = models(name, case["model"])
    pixels = make_pixels(case["pixel_shape"], case["pixel_seed"], fixture["pixels"]["block"])
    prompt, search, sep = case["prompt"] or [fixture["special_ids"]["cls"]], case["search"], fixture["special_ids"]["sep"]
    if search["kind"] == "trie":
        choice, = classify(model, pixels, search["answers"], prompt_ids=prompt, semantics="original")
        ids = ([] if case["prompt"] else prompt) + search["answers"][choice.index] + [sep]  # VQA: prompt cut
        return [ids], [choice.score], 0
    calls: list[int] = []
    beams = search.get("beam_size", 1) if search["kind"] == "beam" else 1
    if search["kind"] == "beam" and beams == 1:
        ids, scores = beam_of_one(model, pixels, prompt, search, counting(calls))
        return as_original(ids, len(prompt), vqa=case["prompt"] is not None, greedy=False, sep=sep), scores, \
            1 + len(calls)
    out = generate(model, pixels, torch.tensor([prompt] * len(pixels)), num_beams=beams,
                   max_new_tokens=search["max_steps"] - len(prompt), length_penalty=search.get("length_penalty", 1.0),
                   semantics="original", return_dict_in_generate=True, output_scores=True, runtime=counting(calls))
    ids = as_original(out.sequences, len(prompt), vqa=case["prompt"] is not None, greedy=beams == 1 and
                      search["kind"] == "greedy", sep=sep)
    return ids, out.sequences_scores.tolist(), 1 + len(calls)


def beam_of_one(model: GIT, pixels: torch.Tensor, prompt: list[int], search: dict[str, Any], runtime: Any):
    """The original's GeneratorWithBeamSearch with beam_size 1: our beam loop at K = 1 under the original's rules."""
    input_ids = torch.tensor([prompt] * len(pixels))
    n_new = search["max_steps"] - len(prompt)
    state, logits = prefill(model, encode_prefix(model, pixels), torch.arange(len(pixels)), input_ids,
                            torch.ones_like(input_ids), n_new)
    ids, scores, _ = beam_search(model, state, logits, input_ids, make_processor(len(prompt), eos_id=model.cfg.eos_id),
                                 num_beams=1, max_new_tokens=n_new, eos_id=model.cfg.eos_id, pad_id=model.cfg.pad_id,
                                 length_penalty=search["length_penalty"], early_stopping=False, num_return_sequences=1,
                                 rules=SEMANTICS["original"], runtime=runtime)
    return ids, scores.tolist()


@pytest.mark.parametrize(("name", "case_name"), params())
def test_tokens_equal_the_originals(models, name: str, case_name: str) -> None:
    case = case_of(name, case_name)
    ids, scores, steps = run_case(models, name, case)
    assert ids == case["predictions"]
    logprobs = [row[0] if isinstance(row, list) else row for row in case["logprobs"]]
    assert scores == pytest.approx(logprobs, rel=1e-4, abs=2e-3)  # the original's score: see docs/generation.md
    if case["search"]["kind"] != "trie":
        assert steps == case["steps"]


TRIE_PAIRS = [pytest.param(name, case["name"], id=case["name"], marks=[pytest.mark.slow] if name in SLOW else [])
              for name in NAMES for case in LOADED[name]["cases"] if "[a,a]-vs-[a,b]" in case["name"]]


@pytest.mark.parametrize(("name", "case_name"), TRIE_PAIRS)
def test_the_default_trie_picks_the_repeat_the_original_bans(models, name: str, case_name: str) -> None:
    """The fixture's [a, a] / [a, b] cases are chosen so that the model prefers a after a: a -inf constraint
    without the ban returns [a, a], the original [a, b]."""
    case, fixture = case_of(name, case_name), LOADED[name]
    answers = case["search"]["answers"]
    pixels = make_pixels(case["pixel_shape"], case["pixel_seed"], fixture["pixels"]["block"])
    prompt = case["prompt"] or [fixture["special_ids"]["cls"]]
    model = models(name, case["model"])
    assert answers[classify(model, pixels, answers, prompt_ids=prompt)[0].index] == [answers[0][0]] * 2
    assert answers[classify(model, pixels, answers, prompt_ids=prompt, semantics="original")[0].index][1] != \
        answers[0][0]


@pytest.fixture(scope="module")
def tiny() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config(init_std=0.5)).eval()


def test_default_semantics_differs_where_the_rules_differ(tiny: GIT) -> None:
    """The ban makes greedy differ, the length rules beam search: the same call under both semantics."""
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for kwargs in ({}, {"num_beams": 3, "length_penalty": 0.6}):
        ours = generate(tiny, pixels, max_new_tokens=12, semantics="original", **kwargs)
        theirs = generate(tiny, pixels, max_new_tokens=12, **kwargs)
        assert ours.shape[1] == 13 or not kwargs  # beam search returns max_steps ids under the original
        assert not torch.equal(ours[:, :theirs.shape[1]], theirs), kwargs


def test_greedy_never_repeats_a_token_at_once(tiny: GIT) -> None:
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = generate(tiny, pixels, max_new_tokens=15, semantics="original")[:, 1:]
    eos = tiny.cfg.eos_id
    repeats = (ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] != eos)
    assert not repeats.any()
    assert (generate(tiny, pixels, max_new_tokens=15)[:, 2:] == generate(tiny, pixels, max_new_tokens=15)[:, 1:-1]).any()


def test_the_row_is_in_the_table() -> None:
    rules = SEMANTICS["original"]
    assert rules.length(4, 2, eos=True) == 5  # [CLS] + question (2) + 3 words: prompt counted, [SEP] not
    assert rules.denominator(19, 0.6) == pytest.approx(2.0 ** 0.6 * 2.0 ** 0.6)  # ((5 + 19) / 6) ** 0.6 = 4 ** 0.6


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"do_sample": True}, r"^semantics='original' does not support do_sample=True"),
    ({"num_beams": 2, "num_return_sequences": 2}, "num_return_sequences=2"),
    ({"num_beams": 2, "early_stopping": True}, "early_stopping=True"),
    ({"repetition_penalty": 1.2}, "repetition_penalty=1.2"),
    ({"num_beams": 2, "length_penalty": 0.0}, "length_penalty > 0"),
    ({"attention_mask": torch.tensor([[0, 1], [1, 1]]), "input_ids": torch.tensor([[0, 1], [1, 5]])}, "unpadded"),
])
def test_unknown_combinations_are_one_line_errors(tiny: GIT, kwargs: dict, match: str) -> None:
    kwargs = {"input_ids": None, **kwargs}
    with pytest.raises(ValueError, match=match) as error:
        generate(tiny, torch.zeros(2, 3, 32, 32), kwargs.pop("input_ids"), kwargs.pop("attention_mask", None),
                 semantics="original", **kwargs)
    assert "\n" not in str(error.value)


def test_trie_needs_one_image_and_one_beam(tiny: GIT) -> None:
    with pytest.raises(ValueError, match="one image"):
        classify(tiny, torch.zeros(2, 3, 32, 32), [[5], [6]], semantics="original")
    with pytest.raises(ValueError, match="num_beams"):
        classify(tiny, torch.zeros(1, 3, 32, 32), [[5], [6]], semantics="original", num_beams=2)
