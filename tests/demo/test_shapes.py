"""The synthetic shapes dataset: text is exact, pixels agree with the text, splits are honest.

Captions are parsed back into (size, colour, shape) and checked against the rendered pixels
rather than against the scene objects, so a caption that names the wrong object fails too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from git_scratch.demo import shapes
from git_scratch.demo.shapes import (
    PALETTE,
    SPLITS,
    Scene,
    SceneObject,
    ShapesConfig,
    caption,
    caption_order,
    generate_shapes,
    manifest_lines,
    questions,
    render_scene,
    sample_scenes,
    vocabulary,
)

CFG = ShapesConfig(n_train=400, n_heldout=150, n_compositional=150, seed=7, relations=shapes.RELATIONS)
PHRASE = r"a (small|large) (\w+) (circle|square|triangle)"
CAPTION = re.compile(rf"^{PHRASE}(?: (left of|above) {PHRASE})?$")


def words(text: str) -> list[str]:
    """The project's word-level split: runs of word characters, and each punctuation mark alone."""
    return re.findall(r"\w+|[^\w\s]", text)


@pytest.fixture(scope="module")
def scenes() -> dict[str, list[Scene]]:
    return {split: sample_scenes(CFG, split) for split in SPLITS}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("shapes")
    return out, generate_shapes(out, CFG)


def pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render_scene(scene, CFG.image_size))  # (H, W, 3)


def centre_px(o: SceneObject) -> tuple[int, int]:
    return int(o.centre[0] * CFG.image_size), int(o.centre[1] * CFG.image_size)


def parse_caption(text: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """"a small red circle left of a large blue square" -> ([(small, red, circle), ...], "left of")."""
    m = CAPTION.match(text)
    assert m, f"caption outside the grammar: {text!r}"
    g = m.groups()
    phrases = [g[0:3]] + ([g[4:7]] if g[3] else [])
    return [tuple(p) for p in phrases], g[3]


# --- determinism --------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_seeded() -> None:
    assert sample_scenes(CFG, "train") == sample_scenes(CFG, "train")
    other = ShapesConfig(n_train=400, n_heldout=150, n_compositional=150, seed=8)
    assert sample_scenes(other, "train") != sample_scenes(CFG, "train")


def test_generation_is_byte_identical(generated: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    first, _ = generated
    generate_shapes(tmp_path, CFG)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for f in files:
        assert (first / f).read_bytes() == (tmp_path / f).read_bytes(), f


# --- splits -------------------------------------------------------------------------------------


def test_split_sizes(scenes: dict[str, list[Scene]]) -> None:
    assert {s: len(v) for s, v in scenes.items()} == {"train": 400, "heldout": 150, "compositional": 150}


def test_no_layout_repeats_within_or_across_train_and_heldout(scenes: dict[str, list[Scene]]) -> None:
    train = [s.objects for s in scenes["train"]]
    heldout = [s.objects for s in scenes["heldout"]]
    assert len(set(train)) == len(train)
    assert len(set(heldout)) == len(heldout)
    assert not set(train) & set(heldout)


def test_held_out_pairs_only_in_compositional(scenes: dict[str, list[Scene]]) -> None:
    held = set(CFG.held_out_pairs)
    for split in ("train", "heldout"):
        assert not any((o.colour, o.shape) in held for s in scenes[split] for o in s.objects), split
    assert all(any((o.colour, o.shape) in held for o in s.objects) for s in scenes["compositional"])
    # Every held-out pair is actually tested, and the compositional set still has two-object scenes.
    seen = {(o.colour, o.shape) for s in scenes["compositional"] for o in s.objects}
    assert held <= seen
    assert any(len(s.objects) == 2 for s in scenes["compositional"])


def test_train_covers_every_training_pair_and_word(scenes: dict[str, list[Scene]]) -> None:
    seen = {(o.colour, o.shape) for s in scenes["train"] for o in s.objects}
    assert seen == set(CFG.training_pairs)
    counts = Counter(len(s.objects) for s in scenes["train"])
    assert set(counts) == {1, 2}


# --- captions against pixels --------------------------------------------------------------------


def run_length(column: np.ndarray, start: int, colour: tuple[int, int, int]) -> int:
    """Length of the run of exactly `colour` through index `start` of a (H, 3) pixel column."""
    same = np.all(column == colour, axis=-1)
    lo, hi = start, start
    while lo > 0 and same[lo - 1]:
        lo -= 1
    while hi < len(same) - 1 and same[hi + 1]:
        hi += 1
    return hi - lo + 1


def fill_ratio(image: np.ndarray, o: SceneObject, colour: tuple[int, int, int]) -> float:
    """Share of the object's box that is exactly its colour: ~1 square, ~0.75 circle, ~0.5 triangle."""
    side = CFG.image_size
    x0, x1 = round((o.centre[0] - o.radius) * side), round((o.centre[0] + o.radius) * side)
    y0, y1 = round((o.centre[1] - o.radius) * side), round((o.centre[1] + o.radius) * side)
    box = image[y0:y1, x0:x1]
    return float(np.all(box == colour, axis=-1).mean())


@pytest.mark.parametrize("split", SPLITS)
def test_caption_matches_rendered_pixels(scenes: dict[str, list[Scene]], split: str) -> None:
    for scene in scenes[split]:
        image = pixels(scene)
        assert tuple(image[0, 0]) == scene.background  # margins keep corners empty
        phrases, _ = parse_caption(caption(scene))
        assert len(phrases) == len(scene.objects)
        for (size, colour, shape), o in zip(phrases, caption_order(scene)):
            x, y = centre_px(o)
            assert tuple(image[y, x]) == PALETTE[colour], caption(scene)
            # Every shape spans its box top to bottom through the centre column: at 64 px that is
            # 10-13 pixels of pure colour for small shapes and 20-25 for large ones.
            height = run_length(image[:, x], y, PALETTE[colour])
            assert (height < 17) == (size == "small"), (caption(scene), height)
            # Measured over 5000 scenes: circle 0.67-0.73, square 0.84-0.92, triangle 0.38-0.44.
            ratio = fill_ratio(image, o, PALETTE[colour])
            expected = {"square": (0.8, 1.0), "circle": (0.6, 0.78), "triangle": (0.3, 0.5)}[shape]
            assert expected[0] <= ratio <= expected[1], (caption(scene), ratio)


def test_palette_is_far_apart_and_far_from_background() -> None:
    colours = np.array(list(PALETTE.values()), dtype=float)
    dist = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert dist[~np.eye(len(colours), dtype=bool)].min() > 100
    # Distance from each colour to the nearest background any tint can produce.
    lo, hi = shapes.BACKGROUND - shapes.BACKGROUND_TINT, shapes.BACKGROUND + shapes.BACKGROUND_TINT
    assert np.linalg.norm(colours - colours.clip(lo, hi), axis=-1).min() > 150


def test_relation_is_unambiguous(scenes: dict[str, list[Scene]]) -> None:
    side, gap = CFG.image_size, CFG.px(shapes.GAP)
    used = Counter()
    for scene in scenes["train"] + scenes["compositional"]:
        _, rel = parse_caption(caption(scene))
        if rel is None:
            continue
        used[rel] += 1
        first, second = caption_order(scene)
        along, across = (0, 1) if rel == "left of" else (1, 0)
        d_along = (second.centre[along] - first.centre[along]) * side
        d_across = (second.centre[across] - first.centre[across]) * side
        # The boxes are apart along the named axis by at least the gap, and the other axis is minor.
        assert d_along - (first.radius + second.radius) * side >= gap - 1e-9, caption(scene)
        assert d_along >= 2 * abs(d_across), caption(scene)
    assert used["left of"] > 50 and used["above"] > 50


def test_caption_order_comes_from_positions_not_tuple_order() -> None:
    left = SceneObject("red", "circle", "small", (0.2, 0.5), 0.1)
    right = SceneObject("blue", "square", "large", (0.75, 0.55), 0.2)
    top = SceneObject("green", "triangle", "small", (0.5, 0.15), 0.1)
    bottom = SceneObject("yellow", "circle", "large", (0.45, 0.7), 0.2)
    assert caption(Scene((right, left))) == "a small red circle left of a large blue square"
    assert caption(Scene((bottom, top))) == "a small green triangle above a large yellow circle"
    assert caption(Scene((top,))) == "a small green triangle"


# --- questions ----------------------------------------------------------------------------------


def answer_from_scene(question: str, scene: Scene) -> list[str]:
    """Every answer the scene supports for a question, found without `questions`."""
    if question == "how many shapes are there?":
        return [{1: "one", 2: "two"}[len(scene.objects)]]
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        return [o.colour for o in scene.objects if o.shape == m[1]]
    if m := re.fullmatch(r"what size is the (\w+)\?", question):
        return [o.size for o in scene.objects if o.shape == m[1]]
    if m := re.fullmatch(r"what shape is (\w+)\?", question):
        return [o.shape for o in scene.objects if o.colour == m[1]]
    raise AssertionError(f"question outside the grammar: {question!r}")


@pytest.mark.parametrize("split", SPLITS)
def test_every_answer_is_unique_and_correct(scenes: dict[str, list[Scene]], split: str) -> None:
    for scene in scenes[split]:
        asked = questions(scene)
        assert len({q for q, _ in asked}) == len(asked)
        for q, a in asked:
            assert answer_from_scene(q, scene) == [a], (caption(scene), q, a)


def test_every_answerable_question_is_asked(scenes: dict[str, list[Scene]]) -> None:
    for scene in scenes["train"]:
        asked = dict(questions(scene))
        shape_counts = Counter(o.shape for o in scene.objects)
        colour_counts = Counter(o.colour for o in scene.objects)
        for o in scene.objects:
            assert (f"what color is the {o.shape}?" in asked) == (shape_counts[o.shape] == 1)
            assert (f"what size is the {o.shape}?" in asked) == (shape_counts[o.shape] == 1)
            assert (f"what shape is {o.colour}?" in asked) == (colour_counts[o.colour] == 1)
        assert "how many shapes are there?" in asked


# --- text format and vocabulary -----------------------------------------------------------------


def all_texts(scenes: dict[str, list[Scene]]) -> list[str]:
    texts = []
    for split in SPLITS:
        for scene in scenes[split]:
            texts.append(caption(scene))
            texts += [t for qa in questions(scene) for t in qa]
    return texts


def test_text_format(scenes: dict[str, list[Scene]]) -> None:
    for scene in scenes["train"]:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", caption(scene))
        for q, a in questions(scene):
            assert re.fullmatch(r"[a-z]+( [a-z]+)*\?", q)
            assert re.fullmatch(r"[a-z]+", a)
            assert words(q)[-1] == "?"


def test_vocabulary_is_exactly_the_words_used(scenes: dict[str, list[Scene]]) -> None:
    used = {w for text in all_texts(scenes) for w in words(text)}
    vocab = vocabulary(CFG)
    assert vocab == sorted(set(vocab))
    assert "?" in vocab
    assert used == set(vocab)


def test_vocabulary_follows_the_config() -> None:
    cfg = ShapesConfig(colours=("red", "blue"), object_counts=(1,), held_out_pairs=(("blue", "circle"),))
    vocab = vocabulary(cfg)
    assert "green" not in vocab and "two" not in vocab and "left" not in vocab
    assert {"red", "blue", "one", "?"} <= set(vocab)


def test_one_relation_lays_every_pair_out_along_it() -> None:
    cfg = ShapesConfig(relations=("left of",), n_train=200, n_heldout=0, n_compositional=0)
    relations = {parse_caption(caption(scene))[1] for scene in sample_scenes(cfg, "train")}
    assert relations == {None, "left of"}  # one-object captions have none
    assert "above" not in vocabulary(cfg) and {"left", "of"} <= set(vocabulary(cfg))


# --- manifests on disk --------------------------------------------------------------------------


def test_manifests_parse_and_agree_with_memory(
    generated: tuple[Path, dict[str, Path]], scenes: dict[str, list[Scene]]
) -> None:
    out, manifests = generated
    assert manifests == {s: out / f"{s}.jsonl" for s in SPLITS}
    assert not list(out.glob(".*.tmp"))
    for split, path in manifests.items():
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        expected = [r for i, s in enumerate(scenes[split]) for r in manifest_lines(s, f"images/{split}/{i:06d}.png")]
        assert records == expected
        for r in records:
            assert set(r) in ({"image", "caption"}, {"image", "question", "answer"})
            assert (path.parent / r["image"]).is_file()
        assert sum("caption" in r for r in records) == len(scenes[split])


def test_png_equals_in_memory_render(generated: tuple[Path, dict[str, Path]], scenes: dict[str, list[Scene]]) -> None:
    out, _ = generated
    for split in SPLITS:
        for i in (0, len(scenes[split]) - 1):
            with Image.open(out / "images" / split / f"{i:06d}.png") as png:
                assert png.mode == "RGB" and png.size == (CFG.image_size, CFG.image_size)
                assert np.array_equal(np.asarray(png), pixels(scenes[split][i]))


def test_interrupted_generation_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.jsonl").write_text("stale\n")
    calls = 0

    def failing_render(scene: Scene, image_size: int) -> Image.Image:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise RuntimeError("interrupted")
        return render_scene(scene, image_size)

    monkeypatch.setattr(shapes, "render_scene", failing_render)
    with pytest.raises(RuntimeError):
        generate_shapes(tmp_path, CFG)
    assert not list(tmp_path.glob("*.jsonl"))


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"colours": ("red", "pink")},
        {"shapes": ("circle", "hexagon")},
        {"object_counts": (1, 3)},
        {"relations": ("left of", "behind")},
        {"relations": ()},
        {"held_out_pairs": (("pink", "circle"),)},
        {"colours": ("red",), "shapes": ("circle",), "held_out_pairs": (("red", "circle"),)},
        {"image_size": 24},
    ],
)
def test_config_rejects_impossible_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ShapesConfig(**kwargs)


def test_too_few_distinct_scenes_is_an_error_not_a_hang() -> None:
    tiny = ShapesConfig(
        image_size=32, colours=("red", "blue"), shapes=("circle",), sizes=("small",), object_counts=(1,),
        held_out_pairs=(("blue", "circle"),), n_train=1000,
    )  # 24 x 24 positions of one red circle: 576 layouts
    with pytest.raises(ValueError, match="n_train"):
        sample_scenes(tiny, "train")


@pytest.mark.parametrize("side", [32, 48, 128])
def test_other_image_sizes_render_and_fit(side: int) -> None:
    cfg = ShapesConfig(image_size=side, n_train=200, sizes=("large",))  # large only: the tightest fit
    for scene in sample_scenes(cfg, "train"):
        image = np.asarray(render_scene(scene, side))
        assert tuple(image[0, 0]) == scene.background
        for o in scene.objects:
            x, y = int(o.centre[0] * side), int(o.centre[1] * side)
            assert tuple(image[y, x]) == PALETTE[o.colour]
            assert (o.centre[0] - o.radius) * side >= 1 and (o.centre[0] + o.radius) * side <= side - 1


def test_heldout_keeps_the_object_count_mix_of_train():
    """One object has far fewer lattice layouts than two; redrawing whole scenes on a repeat
    once left the default heldout split with 25% one-object images against train's 50%."""
    cfg = ShapesConfig()
    train, heldout = sample_scenes(cfg, "train"), sample_scenes(cfg, "heldout")
    single = [sum(len(s.objects) == 1 for s in split) / len(split) for split in (train, heldout)]
    assert abs(single[0] - 0.5) < 0.05 and abs(single[1] - 0.5) < 0.05, single
