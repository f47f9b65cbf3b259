"""A synthetic "shapes" dataset: coloured circles, squares and triangles with exact captions.

The demo trains a tiny GIT from scratch on this in minutes, so everything here is chosen to
make exact-match accuracy meaningful: a small closed vocabulary, captions and answers that are
deterministic functions of the scene, and layouts in which every relation is unambiguous.

    caption   "a small red circle left of a large blue square"
    question  "what color is the circle?"  ->  "red"

Three splits:
    train          colour-shape pairs from `ShapesConfig.held_out_pairs` never appear
    heldout        the same distribution as train; no object layout of train repeats
    compositional  every image holds at least one held-out colour-shape pair

Geometry is in fractions of the image side, with y pointing down as in Pillow, so a scene can
be rendered at any resolution. Object centres sit on a lattice of `ShapesConfig.grid` steps per
side, by default the 8 x 8 patch grid of the demo's ViT: a tiny ViT then sees each shape cut
by patch borders in a few consistent ways. Even untrained, its mean token tells the three shapes
apart to a linear probe at 97 % on the lattice and 51 % at any pixel (`grid=0`;
scripts/shape_probe.py). What the demo tests is composition: colour, shape, size, count and
order (which object is on the left) in layouts it has not seen, not translation invariance.
Two objects sit side by side unless `ShapesConfig.relations` adds "above".

Centres sit on pixel centres of a `cfg.image_size` grid and half-extents are whole pixels, so
two scenes are "the same" exactly when their objects compare equal. Every shape fills the
square box `centre +- radius` edge to edge (the triangle's base is the box's bottom, its apex
the top middle), so non-overlap and relations are box arithmetic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw
from tqdm import tqdm

log = logging.getLogger(__name__)

Split = Literal["train", "heldout", "compositional"]
SPLITS: tuple[Split, ...] = ("train", "heldout", "compositional")

# Saturated, pairwise far apart (the closest pairs, red-orange and orange-yellow, are 112 apart
# in RGB) and all more than 180 from any background tint, so no colour is in doubt at 64 px.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 230, 40),
    "purple": (140, 40, 180),
    "orange": (250, 125, 0),
}
SHAPES = ("circle", "square", "triangle")
# Half-extent range of each size, as a fraction of the image side. The gap between the ranges
# (at 64 px: small 6-7 px, large 11-13 px) keeps "small" and "large" separable at a glance.
RADIUS_RANGE: dict[str, tuple[float, float]] = {"small": (0.08, 0.11), "large": (0.17, 0.21)}
MIN_IMAGE_SIZE = 32  # below this a small shape is a few pixels and its shape is guesswork
COUNT_WORDS = {1: "one", 2: "two"}
RELATIONS = ("left of", "above")

MARGIN = 0.02  # empty border around every shape, fraction of the image side
GAP = 0.06  # minimum empty space between two shapes' boxes along their relation axis
# Along-axis distance / across-axis distance is at least this for two objects, so "left of" and
# "above" scenes sit far apart: one has |dy| <= |dx| / 2, the other |dx| <= |dy| / 2.
DOMINANCE = 2
BACKGROUND = 235  # light grey ...
BACKGROUND_TINT = 10  # ... with each channel moved by up to this much, per image
SUPERSAMPLE = 4  # draw at 4x and box-filter down: anti-aliased edges, still deterministic
MAX_REPEATS = 10_000  # repeated layouts tolerated per split before the config is called too small


@dataclass(frozen=True)
class ShapesConfig:
    """What `sample_scenes` draws from and how many scenes each split gets."""

    image_size: int = 64  # side of the square PNGs; geometry scales with it
    colours: tuple[str, ...] = tuple(PALETTE)  # names from PALETTE
    shapes: tuple[str, ...] = SHAPES
    sizes: tuple[str, ...] = ("small", "large")
    object_counts: tuple[int, ...] = (1, 2)  # objects per image, drawn uniformly from these
    # How two objects may sit, drawn uniformly from RELATIONS. The demo's model never learns to
    # tell "left of" from "above" (57 % right after 2,000 steps; docs/training.md), so by default
    # two objects sit side by side and the caption's order (left one first) is what tests position.
    relations: tuple[str, ...] = ("left of",)
    n_train: int = 4000
    n_heldout: int = 500
    n_compositional: int = 500
    grid: int = 8  # object centres on a lattice of this many steps per side; 0: any pixel
    seed: int = 0
    # (colour, shape) pairs that never appear in train or heldout; only compositional has them.
    held_out_pairs: tuple[tuple[str, str], ...] = (
        ("blue", "circle"),
        ("red", "triangle"),
        ("green", "square"),
    )

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"ShapesConfig.image_size={self.image_size} is too small; use {MIN_IMAGE_SIZE} or more")
        _check_subset("colours", self.colours, PALETTE)
        _check_subset("shapes", self.shapes, SHAPES)
        _check_subset("sizes", self.sizes, RADIUS_RANGE)
        _check_subset("object_counts", self.object_counts, COUNT_WORDS)
        _check_subset("relations", self.relations, RELATIONS)
        for colour, shape in self.held_out_pairs:
            if colour not in self.colours or shape not in self.shapes:
                raise ValueError(
                    f"ShapesConfig.held_out_pairs has ({colour!r}, {shape!r}), which is not a pair "
                    f"of the configured colours {self.colours} and shapes {self.shapes}"
                )
        if not self.training_pairs:
            raise ValueError("ShapesConfig.held_out_pairs holds every colour-shape pair; leave some for training")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or not 0 <= self.grid <= self.image_size:
            raise ValueError(f"ShapesConfig.grid={self.grid!r} is not a lattice size; use a whole number "
                             f"from 0 (any pixel) to image_size={self.image_size}")
        if self.n_compositional > 0 and not self.held_out_pairs:
            raise ValueError("ShapesConfig.n_compositional > 0 needs at least one held_out_pairs entry")

    @property
    def training_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (c, s) for c in self.colours for s in self.shapes if (c, s) not in self.held_out_pairs
        )

    def n_examples(self, split: Split) -> int:
        return {"train": self.n_train, "heldout": self.n_heldout, "compositional": self.n_compositional}[split]

    def radius_px(self, size: str) -> tuple[int, int]:
        """Inclusive range of half-extents, in whole pixels, for one size word."""
        lo, hi = RADIUS_RANGE[size]
        return math.ceil(lo * self.image_size), math.floor(hi * self.image_size)

    def px(self, fraction: float) -> int:
        return max(1, round(fraction * self.image_size))


def _check_subset(name: str, values: tuple, allowed: Collection) -> None:
    if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
        raise ValueError(f"ShapesConfig.{name}={values!r}: use distinct values from {tuple(allowed)}")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str  # "small" or "large"; `radius` is drawn from that size's range
    centre: tuple[float, float]  # (x, y), fractions of the image side, y down
    radius: float  # half the side of the object's square box, fraction of the image side


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in caption order: the left (or upper) object first
    background: tuple[int, int, int] = (BACKGROUND,) * 3


# ---------------------------------------------------------------------------------------------
# Text: captions, questions, vocabulary. Pure functions of the scene.
# ---------------------------------------------------------------------------------------------


def relation(first: SceneObject, second: SceneObject) -> str:
    """How `first` sits relative to `second`, along the axis where they are further apart."""
    dx = second.centre[0] - first.centre[0]
    dy = second.centre[1] - first.centre[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def caption_order(scene: Scene) -> tuple[SceneObject, ...]:
    """The objects ordered so the relation reads "left of" or "above", never its mirror."""
    if len(scene.objects) != 2:
        return scene.objects
    a, b = scene.objects
    return (a, b) if relation(a, b) in RELATIONS else (b, a)


def caption(scene: Scene) -> str:
    """One object: "a small red circle"; two: "a small red circle left of a large blue square"."""
    objects = caption_order(scene)
    phrases = [f"a {o.size} {o.colour} {o.shape}" for o in objects]
    if len(phrases) == 1:
        return phrases[0]
    return f"{phrases[0]} {relation(*objects)} {phrases[1]}"


def questions(scene: Scene) -> list[tuple[str, str]]:
    """(question, one-word answer) pairs, only those whose answer is unique in this scene.

    An object is named by its shape or its colour only when no other object shares it, so
    "the circle" always refers to exactly one thing. Questions say "color" (US spelling) as
    VQA datasets do.
    """
    shape_counts = Counter(o.shape for o in scene.objects)
    colour_counts = Counter(o.colour for o in scene.objects)
    pairs = [("how many shapes are there?", COUNT_WORDS[len(scene.objects)])]
    for o in caption_order(scene):
        if shape_counts[o.shape] == 1:
            pairs.append((f"what color is the {o.shape}?", o.colour))
            pairs.append((f"what size is the {o.shape}?", o.size))
        if colour_counts[o.colour] == 1:
            pairs.append((f"what shape is {o.colour}?", o.shape))
    return pairs


def vocabulary(cfg: ShapesConfig) -> list[str]:
    """Every word captions, questions and answers can use, "?" included, sorted."""
    words = {"a", "how", "many", "shapes", "are", "there", "what", "color", "shape", "size", "is", "the", "?"}
    words |= set(cfg.colours) | set(cfg.shapes) | set(cfg.sizes)
    words |= {COUNT_WORDS[n] for n in cfg.object_counts}
    if 2 in cfg.object_counts:
        words |= {w for r in cfg.relations for w in r.split()}
    return sorted(words)


# ---------------------------------------------------------------------------------------------
# Sampling scenes.
# ---------------------------------------------------------------------------------------------


def sample_scenes(cfg: ShapesConfig, split: Split) -> list[Scene]:
    """The scenes of one split, deterministic given `cfg` (each split has its own random stream).

    No object layout repeats within a split, and heldout never repeats one from train (the
    background tint is ignored for this: a re-tinted training image is still a training image).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    # A string seed is hashed with SHA-512 by `random`, so it does not vary between runs.
    rng = random.Random(f"git_scratch.shapes:{cfg.seed}:{split}")
    seen = {s.objects for s in sample_scenes(cfg, "train")} if split == "heldout" else set()
    scenes, misses = [], 0
    while len(scenes) < cfg.n_examples(split):
        # The object count is drawn first and kept through redraws: one object has far fewer
        # layouts than two, so rejecting whole scenes would leave heldout short of one-object images.
        n = rng.choice(cfg.object_counts)
        scene = _sample_scene(cfg, rng, n, compositional=split == "compositional")
        while scene.objects in seen:
            misses += 1
            # Only a config with very few colours, shapes and pixels can run out of layouts.
            if misses > MAX_REPEATS:
                raise ValueError(
                    f"ShapesConfig allows too few distinct {split} scenes for n_{split}="
                    f"{cfg.n_examples(split)}; lower it or add colours, shapes or image_size"
                )
            scene = _sample_scene(cfg, rng, n, compositional=split == "compositional")
        seen.add(scene.objects)
        scenes.append(scene)
    return scenes


def _sample_scene(cfg: ShapesConfig, rng: random.Random, n: int, *, compositional: bool) -> Scene:
    pool = cfg.training_pairs + cfg.held_out_pairs if compositional else cfg.training_pairs
    pairs = [rng.choice(pool) for _ in range(n)]
    if compositional:  # a held-out pair in a random slot; the other object may be anything
        pairs[rng.randrange(n)] = rng.choice(cfg.held_out_pairs)
    sizes = [rng.choice(cfg.sizes) for _ in range(n)]
    radii = [rng.randint(*cfg.radius_px(s)) for s in sizes]
    centres = _place(cfg, rng, radii)
    side = cfg.image_size
    objects = tuple(
        SceneObject(colour, shape, size, ((x + 0.5) / side, (y + 0.5) / side), r / side)
        for (colour, shape), size, r, (x, y) in zip(pairs, sizes, radii, centres)
    )
    background = tuple(BACKGROUND + rng.randint(-BACKGROUND_TINT, BACKGROUND_TINT) for _ in range(3))
    unordered = Scene(objects, background)
    return Scene(caption_order(unordered), background)


def _place(cfg: ShapesConfig, rng: random.Random, radii: list[int]) -> list[tuple[int, int]]:
    """Pixel centres for one or two objects; two are placed so their relation is unambiguous.

    Work in (along, across) coordinates of the relation axis: the first object's box ends at
    least GAP before the second's begins along the axis, and the across-axis offset is at most
    1 / DOMINANCE of the along-axis one. "above" is the same layout with x and y swapped.
    """
    margin, side = cfg.px(MARGIN), cfg.image_size

    def lo(r: int) -> int:
        return r + margin

    def hi(r: int) -> int:
        return side - 1 - r - margin

    def pick(first: int, last: int) -> int:
        """A centre coordinate in [first, last]: a lattice point when the range holds one."""
        step = side // cfg.grid if cfg.grid else 1
        points = range(-(-first // step) * step, last + 1, step)
        return rng.choice(points) if points else rng.randint(first, last)

    if len(radii) == 1:
        (r,) = radii
        return [(pick(lo(r), hi(r)), pick(lo(r), hi(r)))]
    r0, r1 = radii
    # Two large shapes need 4 * 0.21 + 2 * MARGIN + GAP = 0.94 of the side, so these ranges are
    # never empty for any image size ShapesConfig accepts.
    min_along = r0 + r1 + cfg.px(GAP)
    a0 = pick(lo(r0), hi(r1) - min_along)
    a1 = pick(a0 + min_along, hi(r1))
    c0 = pick(lo(r0), hi(r0))
    spread = (a1 - a0) // DOMINANCE
    # Never empty: spread >= min_along / 2 >= |r1 - r0|, the most the two radii's ranges differ by.
    c1 = pick(max(lo(r1), c0 - spread), min(hi(r1), c0 + spread))
    if rng.choice(cfg.relations) == "left of":
        return [(a0, c0), (a1, c1)]
    return [(c0, a0), (c1, a1)]


# ---------------------------------------------------------------------------------------------
# Rendering and writing to disk.
# ---------------------------------------------------------------------------------------------


def render_scene(scene: Scene, image_size: int) -> Image.Image:
    """Draw the scene as an RGB image, `image_size` pixels square."""
    scale = image_size * SUPERSAMPLE
    image = Image.new("RGB", (scale, scale), scene.background)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x, y, r = o.centre[0] * scale, o.centre[1] * scale, o.radius * scale
        colour = PALETTE[o.colour]
        # Pillow's boxes include their far edge, hence the - 1 on right and bottom.
        if o.shape == "circle":
            draw.ellipse((x - r, y - r, x + r - 1, y + r - 1), fill=colour)
        elif o.shape == "square":
            draw.rectangle((x - r, y - r, x + r - 1, y + r - 1), fill=colour)
        else:
            draw.polygon(((x, y - r), (x + r - 1, y + r - 1), (x - r, y + r - 1)), fill=colour)
    return image.reduce(SUPERSAMPLE)


def manifest_lines(scene: Scene, image: str) -> list[dict[str, str]]:
    """The manifest records for one image: its caption, then one record per question."""
    lines = [{"image": image, "caption": caption(scene)}]
    lines += [{"image": image, "question": q, "answer": a} for q, a in questions(scene)]
    return lines


def generate_shapes(out_dir: Path, cfg: ShapesConfig, *, progress: bool = False) -> dict[str, Path]:
    """Write every split's PNGs under out_dir/images/<split>/ and a JSONL manifest per split.

    Returns {split: manifest path}. Manifests are removed first and written last, each to a
    temporary name then renamed, so a directory without all three is an unfinished one.
    Image paths in a manifest are relative to the manifest's directory.
    """
    out_dir = Path(out_dir)
    manifests = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    for path in manifests.values():
        path.unlink(missing_ok=True)
    records: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        image_dir = out_dir / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        records[split] = []
        for i, scene in enumerate(tqdm(sample_scenes(cfg, split), desc=split, disable=not progress)):
            name = f"images/{split}/{i:06d}.png"
            render_scene(scene, cfg.image_size).save(out_dir / name, format="PNG")
            records[split] += manifest_lines(scene, name)
        log.info("shapes: wrote %d %s images to %s", cfg.n_examples(split), split, image_dir)
    for split, path in manifests.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records[split]), encoding="utf-8")
        os.replace(tmp, path)
    return manifests
