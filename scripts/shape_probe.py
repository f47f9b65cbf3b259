"""How much of an object's shape an untrained tiny ViT already exposes, with and without the
patch lattice: the measurement behind `ShapesConfig.grid` (docs/training.md).

For each placement (centres on the 8 x 8 patch lattice, `grid=8`; at any pixel, `grid=0`) it
renders one-object shapes images, runs them through the demo's ViT (configs/shapes-tiny.json)
at its seeded initialisation (the one `git-scratch demo` starts from, sin-cos position table
included), and fits a linear probe on the mean token to tell circle, square and triangle apart;
it prints the probe's accuracy on held-out images.

    python scripts/shape_probe.py [--train 2000] [--heldout 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import random

import torch
import torch.nn.functional as F

from git_scratch.config import GitConfig
from git_scratch.data.processor import ImageProcessor
from git_scratch.demo.shapes import SHAPES, Scene, SceneObject, ShapesConfig, _place, render_scene
from git_scratch.model.git import GIT


def one_object_images(cfg: ShapesConfig, n: int, seed: int) -> tuple[list, torch.Tensor]:
    """n one-object scenes of the training colour-shape pairs, rendered; labels index SHAPES."""
    rng = random.Random(seed)
    images, labels = [], []
    for _ in range(n):
        colour, shape = rng.choice(cfg.training_pairs)
        size = rng.choice(cfg.sizes)
        radius = rng.randint(*cfg.radius_px(size))
        ((x, y),) = _place(cfg, rng, [radius])
        side = cfg.image_size
        obj = SceneObject(colour, shape, size, ((x + 0.5) / side, (y + 0.5) / side), radius / side)
        background = tuple(235 + rng.randint(-10, 10) for _ in range(3))
        images.append(render_scene(Scene((obj,), background), side))
        labels.append(SHAPES.index(shape))
    return images, torch.tensor(labels)


def probe_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor) -> float:
    """A standardised linear softmax probe, fitted by Adam; accuracy on (test, test_y)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    weight = torch.zeros(train.shape[1], len(SHAPES), requires_grad=True)
    bias = torch.zeros(len(SHAPES), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(300):
        logits = ((train - mean) / std) @ weight + bias
        loss = F.cross_entropy(logits, train_y) + 1e-4 * weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((((test - mean) / std) @ weight + bias).argmax(-1) == test_y).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="probe training images (default 2000)")
    parser.add_argument("--heldout", type=int, default=500, help="held-out images (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model_cfg = GitConfig.from_name("shapes-tiny")
    vision = model_cfg.vision
    processor = ImageProcessor(size=vision.image_size, crop_size=vision.image_size)
    torch.manual_seed(args.seed)
    encoder = GIT.from_config(model_cfg).vision.eval()  # untrained: the demo's initialisation, seeded
    for grid in (8, 0):
        cfg = dataclasses.replace(ShapesConfig(image_size=vision.image_size), grid=grid)
        with torch.no_grad():
            features = []
            for split_seed, n in ((args.seed + 1, args.train), (args.seed + 2, args.heldout)):
                images, labels = one_object_images(cfg, n, split_seed)
                features.append((encoder(processor(images)).mean(1), labels))  # (n, D) mean token
        (train, train_y), (test, test_y) = features
        placement = f"centres on the {grid} x {grid} lattice" if grid else "centres at any pixel"
        print(f"{placement:32s} held-out shape accuracy of a linear probe: {probe_accuracy(train, train_y, test, test_y):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
