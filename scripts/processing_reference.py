"""Regenerate tests/data/fixtures/backends.json with the reference implementations of ImageProcessor's backends.

The tests run with transformers 5.x only, so what transformers 4.x and Microsoft's original compute is
stored: per case, the shape, the sha256 of the float32 bytes of pixel_values, their sum and a few values.
tests/data/test_backends.py runs ours on the same images (tests/data/fixtures/reference_images.py, shared
with this script) and asserts the same bytes. Nothing of either reference is copied into the project:

- backend "pil": transformers 4.46.3's CLIPImageProcessor (PIL/numpy), installed outside the repo;
- backend "original": microsoft/GenerativeImage2Text at commit faae4fb9f34bfc2fce443513ae222e02b9f7e2e9,
  its own inference.get_image_transform and process_image.load_image_by_pil, from a work tree outside the
  repo, run untouched with an empty `azfuse` module stubbed in (imported at its top, never called here).

Made with Python 3.11, Pillow 13.0.0, numpy 2.4.6, torch 2.14.1, torchvision 0.29.1 (the values are
recorded in the file; Pillow's resize decides the bits):

    .venv/bin/python -m pip install --target /tmp/tfold_p/4.46 transformers==4.46.3 'tokenizers<0.21' \\
        'huggingface_hub<0.27' --no-deps
    .venv/bin/python -m pip install --target /tmp/tfold_p/extra requests
    git -C <bare clone of microsoft/GenerativeImage2Text> archive faae4fb9f34bfc2fce443513ae222e02b9f7e2e9 \\
        | tar -x -C /tmp/git_original
    PYTHONPATH=/tmp/tfold_p/4.46:/tmp/tfold_p/extra .venv/bin/python scripts/processing_reference.py \\
        --original /tmp/git_original --force

transformers 4.26.1 gives the same bytes on every case but the padded one ("pil/pad"), where its
centre crop returns 120 rows instead of 121 (an off-by-one fixed later in 4.x); 4.46 is the reference.

`--table` (plain .venv, transformers 5.x) prints instead the differences between git_scratch's three
backends for docs/processing.md; each backend equals its reference bit for bit (the tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.data.fixtures.reference_images import grace_hopper, images

COMMIT = "faae4fb9f34bfc2fce443513ae222e02b9f7e2e9"
FIXTURE = ROOT / "tests/data/fixtures/backends.json"
# transformers 4.x CLIPImageProcessor keyword arguments, per case (case, image).
PIL_CASES: list[tuple[str, str, dict[str, Any]]] = [
    *((f"pil/224/{name}", name, {}) for name in ("grace_hopper", "333x517", "225x224", "97x130", "rgba", "grey")),
    ("pil/480/grace_hopper", "grace_hopper",
     {"size": {"shortest_edge": 480}, "crop_size": {"height": 480, "width": 480}}),
    # a crop larger than the short side: odd zero padding
    ("pil/pad/150x100", "150x100", {"size": {"shortest_edge": 100}, "crop_size": {"height": 121, "width": 121}}),
]
# The original's parameter.yaml, per case: {} is every captioning model's (224), the 480/640 pair
# GIT_BASE_VQAv2's and the 420/560 pair GIT_LARGE_VQAv2's.
CAPTION, BASE_VQA, LARGE_VQA = {}, {"test_crop_size": 480, "test_respect_ratio_max": 640}, \
    {"test_crop_size": 420, "test_respect_ratio_max": 560}
ORIGINAL_CASES: list[tuple[str, str, dict[str, Any]]] = [
    *((f"original/224/{name}", name, CAPTION) for name in ("grace_hopper", "333x517", "225x224", "97x130", "rgba",
                                                           "grey")),
    ("original/384/97x130", "97x130", {"test_crop_size": 384}),
    *((f"original/vqa480/{name}", name, BASE_VQA) for name in ("grace_hopper", "200x100", "333x517")),
    ("original/vqa420/333x517", "333x517", LARGE_VQA),
]
SAMPLES = 8  # values recorded per case, evenly spaced over the flattened tensor


def summary(pixel_values: torch.Tensor) -> dict[str, Any]:
    """(3, H, W) float32 -> what the fixture keeps of it."""
    flat = pixel_values.contiguous().view(-1)
    at = np.linspace(0, flat.numel() - 1, SAMPLES).round().astype(int).tolist()
    return {"shape": list(pixel_values.shape), "dtype": str(pixel_values.dtype).removeprefix("torch."),
            "sha256": hashlib.sha256(pixel_values.numpy().astype("<f4").tobytes()).hexdigest(),
            "sum": float(pixel_values.double().sum()), "samples": {str(i): float(flat[i]) for i in at}}


def file_of(name: str, image: Image.Image, directory: Path) -> Path:
    """The image as a file, for the original's loader: the JPEG itself, the others as lossless PNG."""
    if name == "grace_hopper":
        return grace_hopper()
    path = directory / f"{name}.png"
    image.save(path)
    return path


def references(original: Path) -> dict[str, Any]:
    import torchvision
    import transformers

    if not transformers.__version__.startswith("4."):
        sys.exit(f"transformers {transformers.__version__} is on the path; put transformers 4.x first (see --help)")
    sys.modules.setdefault("azfuse", types.SimpleNamespace(File=object))  # imported by inference.py, unused here
    sys.path.insert(0, str(original))
    from generativeimage2text.inference import get_image_transform
    from generativeimage2text.process_image import load_image_by_pil

    pictures = images()
    cases: dict[str, Any] = {}
    for case, name, kwargs in PIL_CASES:
        processor = transformers.CLIPImageProcessor(**kwargs)
        pixel_values = processor(pictures[name], return_tensors="pt").pixel_values[0]
        cases[case] = {"image": name, "transformers_kwargs": kwargs, **summary(pixel_values)}
    with tempfile.TemporaryDirectory() as tmp:
        for case, name, parameter in ORIGINAL_CASES:
            image = load_image_by_pil(str(file_of(name, pictures[name], Path(tmp))))
            pixel_values = get_image_transform(parameter)(image)
            cases[case] = {"image": name, "parameter": parameter, "from_file": True, **summary(pixel_values)}
    versions = {"python": sys.version.split()[0], "transformers": transformers.__version__,
                "Pillow": Image.__version__, "numpy": np.__version__, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "original_commit": COMMIT}
    return {"made_by": "scripts/processing_reference.py", "versions": versions, "cases": cases}


def table() -> None:
    """Markdown rows: each pair of backends on each image at 224 px, on the normalised pixel values."""
    from git_scratch.data.processor import ImageProcessor

    ours = {backend: ImageProcessor(backend=backend) for backend in ("torchvision", "pil", "original")}
    pairs = [("pil", "torchvision"), ("original", "torchvision"), ("original", "pil")]
    # One grey level is at least 1 / 255 / max(std) = 0.0142 after normalisation; less is float32 rounding.
    print("| image | pair | max abs | mean abs | values that differ | by a grey level or more |\n"
          "|---|---|---|---|---|---|")
    for name, image in images().items():
        pixels = {backend: processor([image]) for backend, processor in ours.items()}
        for a, b in pairs:
            diff = (pixels[a] - pixels[b]).abs()
            print(f"| {name} | {a} vs {b} | {diff.max():.4f} | {diff.mean():.5f} | {(diff > 0).float().mean():.1%} "
                  f"| {(diff > 1e-3).float().mean():.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, help="work tree of microsoft/GenerativeImage2Text at " + COMMIT)
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    parser.add_argument("--table", action="store_true", help="print docs/processing.md's table instead")
    args = parser.parse_args()
    if args.table:
        return table()
    if args.original is None or not (args.original / "generativeimage2text/inference.py").is_file():
        sys.exit("--original must be a work tree of microsoft/GenerativeImage2Text (see --help)")
    if args.out.exists() and not args.force:
        sys.exit(f"{args.out} exists; pass --force to overwrite it")
    text = json.dumps(references(args.original), indent=1, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, args.out)  # atomic: a reader never sees half a file
    print(f"wrote {args.out}: {len(text)} bytes")


if __name__ == "__main__":
    main()
