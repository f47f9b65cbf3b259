"""Where a trained shapes model's two-object captions go wrong: what it names, or where it puts it.

A two-object caption, "a small red circle left of a large blue square", is right only when three
things are: the two objects (size, colour, shape), their order (the left or upper one first) and
the relation ("left of" or "above"). For every held-out two-object image this script parses the
model's greedy caption and counts each separately. Order and relation are two-way choices, so
50 % is what a model blind to position scores. In the demo's own dataset two objects always sit
side by side (`ShapesConfig.relations`), so there the relation is always "left of" and the
order alone tests position.

It also reports how much position the image encoder can see at all: the size of its learned
position table against that of the patch embeddings it is added to (per token, L2 norms), and
how far that table moved from its initialisation's scale: GIT's init is normal with std `init_std`;
`vision.position_init` s > 0 starts it as the sin-cos table times s, whose std the script also
prints (a saved model's config.json does not say which init it had).

    python scripts/spatial_probe.py runs/demo          # the directory `git-scratch demo` wrote
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from git_scratch.data.manifest import ManifestDataset, read_manifest
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.demo.shapes import RELATIONS
from git_scratch.model.git import GIT
from git_scratch.model.vision import sincos_table
from git_scratch.training.evaluate import predict

TWO_OBJECTS = re.compile(rf"a (\w+) (\w+) (\w+) ({'|'.join(RELATIONS)}) a (\w+) (\w+) (\w+)")


def caption_parts(captions: list[tuple[str, str | None]]) -> dict[str, float]:
    """(target, prediction) pairs of two-object captions -> the share right of each part."""
    counts = {"exact": 0, "two objects named": 0, "both objects right": 0, "first object right": 0,
              "relation right": 0}
    for target, prediction in captions:
        want = TWO_OBJECTS.fullmatch(target)
        got = TWO_OBJECTS.fullmatch(prediction or "")
        counts["exact"] += prediction == target
        if want is None or got is None:
            continue
        first, second = want.groups()[:3], want.groups()[4:]
        got_first, got_second = got.groups()[:3], got.groups()[4:]
        counts["two objects named"] += 1
        counts["both objects right"] += {first, second} == {got_first, got_second}
        counts["first object right"] += first == got_first
        counts["relation right"] += want.group(4) == got.group(4)
    n = len(captions)
    return {name: count / n for name, count in counts.items()} | {"images": n}


def position_scale(model: GIT, pixel_values: torch.Tensor) -> dict[str, float]:
    """Per-token L2 norm of the ViT's position table and of the patch embeddings it is added to."""
    vit = model.vision.vit
    with torch.no_grad():
        patches = vit.conv1(pixel_values).flatten(2).transpose(1, 2)  # (B, n_patches, D)
        table = vit.positional_embedding[1:]  # (n_patches, D), the class token's row left out
    return {"position norm": table.norm(dim=-1).mean().item(),
            "patch embedding norm": patches.norm(dim=-1).mean().item(),
            "position std": table.std().item(), "init std": model.cfg.init_std,
            "sin-cos std": sincos_table(model.cfg.vision.grid, model.cfg.vision.d_model)[1:].std().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a directory written by git-scratch demo (holds model/ and data/)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    model_dir, manifest = args.run / "model", args.run / "data" / "heldout.jsonl"
    for needed in (model_dir / "config.json", manifest):
        if not needed.is_file():
            sys.exit(f"{needed} not found; pass the --out directory of a finished `git-scratch demo` run")
    model = GIT.from_pretrained(model_dir)
    tokenizer = GitTokenizer.from_pretrained(model_dir)
    processor = ImageProcessor.from_pretrained(model_dir)
    examples = [ex for ex in read_manifest(manifest) if ex.prompt is None and TWO_OBJECTS.fullmatch(ex.target)]
    dataset = ManifestDataset(examples, processor, tokenizer, preload=True)
    predictions = predict(model, dataset, batch_size=args.batch_size, max_new_tokens=16)
    parts = caption_parts([(ex.target, p) for ex, p in zip(examples, predictions)])
    print(f"held-out two-object captions: {parts.pop('images')} images")
    for name, share in parts.items():
        print(f"  {name:<20} {share:6.1%}")
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(min(64, len(dataset)))])
    scale = position_scale(model, pixels)
    print(f"ViT input, per token: position table norm {scale['position norm']:.2f}, patch embedding norm "
          f"{scale['patch embedding norm']:.2f}; table std {scale['position std']:.4f} (GIT's init {scale['init std']:.4f}, "
          f"sin-cos table times s: {scale['sin-cos std']:.4f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
