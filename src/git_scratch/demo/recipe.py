"""The main job: train a small GIT from scratch on synthetic shapes, then caption and answer
questions about images it never saw. No download; a few minutes on a 2-core CPU. An app over
git_scratch's public API: it imports `git_scratch` and nothing inside it.

    1. data        shapes.py renders train / held-out / compositional splits and manifests
    2. tokenizer   a word-level vocabulary of the 29 words the captions and questions use
    3. model       configs/shapes-tiny.json: a 3-layer ViT on 64 px images + a 3-layer decoder
    4. training    configs/train/shapes-demo.json through git_scratch.train (AdamW, warmup + cosine)
    5. evaluation  greedy captions and answers on held-out images: exact match and VQA accuracy;
                   the compositional split (colour-shape pairs never seen in training) is
                   reported as it comes out, with no target
    6. pictures    a grid of held-out images with their generated captions, and the loss curve
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from git_scratch import (
    GIT,
    GitConfig,
    GitTokenizer,
    ImageProcessor,
    ManifestDataset,
    TrainConfig,
    atomic_write,
    predict,
    read_manifest,
    score,
    train,
)

from .shapes import ShapesConfig, generate_shapes, vocabulary

TRAIN_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "train" / "shapes-demo.json"
MARKER = ".git_scratch_demo"  # marks a directory the demo made, so a re-run may replace it


def run_demo(out_dir: str | Path = "runs/demo", *, steps: int | None = None, seed: int = 0,
             device: str = "cpu", force: bool = False, progress: bool = True,
             customize: Callable[[GIT], GIT] | None = None, shapes: ShapesConfig | None = None,
             builder: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """Train and evaluate the demo; returns its figures. `customize` changes the fresh model before
    training (docs/extending.md: everything else, data, seed, schedule, stays the baseline's), and
    `builder` ("package.module:function", the same change from a config) makes the trained model
    loadable by `git_scratch.load` and the CLI; `shapes` replaces the dataset's config, e.g. a few
    images for a quick test. `precision` ("fp32", "bf16", "auto": TrainConfig's) overrides
    `demo_precision`'s choice for the device."""
    start = time.perf_counter()
    precision, why = (precision, "asked for") if precision else demo_precision(device)
    TrainConfig(precision=precision)  # a bad value fails before the data is drawn
    out = prepare_out_dir(Path(out_dir), force)
    shapes = shapes or ShapesConfig(seed=seed)
    manifests = generate_shapes(out / "data", shapes)
    tokenizer = GitTokenizer.word_level(vocabulary(shapes))
    train_cfg = TrainConfig.load(TRAIN_CONFIG, train_manifest=str(manifests["train"]), out_dir=str(out),
                                 seed=seed, device=device, precision=precision,
                                 **({"steps": steps} if steps else {}))
    model_cfg = GitConfig.from_name(train_cfg.model).replace(
        vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    torch.manual_seed(seed)
    model = GIT.from_config(model_cfg)
    if customize is not None:
        model = customize(model)
    processor = ImageProcessor(size=model_cfg.vision.image_size, crop_size=model_cfg.vision.image_size)
    trained = train(train_cfg, model=model, tokenizer=tokenizer, processor=processor, progress=progress,
                    official_layout=customize is None, builder=builder)
    train_seconds = trained["seconds"]

    results: dict[str, Any] = {}
    for split in ("heldout", "compositional"):
        examples = read_manifest(manifests[split])
        dataset = ManifestDataset(examples, processor, tokenizer, preload=True)
        predictions = predict(model, dataset, batch_size=128, max_new_tokens=16)
        results[split] = score(examples, predictions)
        if split == "heldout":
            draw_grid(examples, predictions, out / "heldout_captions.png")
    return {
        "caption_exact_match": results["heldout"]["caption_exact_match"],
        "vqa_accuracy": results["heldout"]["vqa_accuracy"],
        "compositional_caption_exact_match": results["compositional"]["caption_exact_match"],
        "compositional_vqa_accuracy": results["compositional"]["vqa_accuracy"],
        "n_heldout_captions": results["heldout"]["n_captions"],
        "n_heldout_questions": results["heldout"]["n_questions"],
        "train_steps": train_cfg.steps,
        "final_loss": trained["final_loss"],
        "train_seconds": round(train_seconds, 1),
        "precision": trained["precision"],  # what training ran in: "fp32" or "bf16"
        "precision_reason": why,
        "seconds": round(time.perf_counter() - start, 1),
        "out_dir": str(out),
        "model_dir": trained["model_dir"],
        "customized": customize is not None,  # then model_dir holds the variant layout (variant.json)
        "train_config": dataclasses.asdict(train_cfg),
    }


def demo_precision(device: str) -> tuple[str, str]:
    """The precision the demo trains in on `device`, and why. On a CPU, bf16 where it has bf16
    instructions: on a 2-core Intel Xeon with AMX the demo trained 1.50x faster than in fp32, on a
    2-core AMD EPYC with AVX512_BF16 (no AMX) a step took 0.82x fp32's CPU time, each at the same
    held-out accuracy within a point (docs/training.md). Without them bf16 products are emulated,
    which no measurement here supports, so the demo keeps fp32."""
    if not device.startswith("cpu"):
        return "auto", f"TrainConfig's default on {device}: bf16 autocast on CUDA, fp32 elsewhere"
    found = cpu_bf16_flags()
    if found:
        return "bf16", (f"this CPU has {' and '.join(f.upper() for f in found)}, where bf16 trains the demo faster "
                        "at the same accuracy; --precision fp32 trains in fp32")
    return "fp32", "this CPU reports no bf16 instructions (AVX512_BF16 or AMX_BF16)"


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The bf16 instruction sets among the CPU's flags in Linux's cpuinfo; none where there is no
    such file (macOS, Windows), which keeps the demo in fp32 there."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]


def prepare_out_dir(out: Path, force: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise FileExistsError(f"{out} exists and was not made by the demo; choose another --out or pass --force")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by git-scratch demo; a re-run replaces this directory\n")
    return out


def draw_grid(examples: list, predictions: list[str | None], path: Path, n: int = 16) -> None:
    """Held-out images with the generated caption: green when exact, red otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    captions = [(ex, p) for ex, p in zip(examples, predictions) if ex.prompt is None][:n]
    cols = 4
    rows = (len(captions) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 3.0), dpi=110)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (ex, pred) in zip(axes.flat, captions):
        ax.imshow(Image.open(ex.media).convert("RGB"), interpolation="nearest")
        right = pred is not None and pred == ex.target
        ax.set_title(_wrap(pred or "(failed)"), fontsize=8, color="green" if right else "red")
    fig.suptitle("held-out images, generated captions (green = exact match)", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _wrap(text: str, width: int = 30) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def report(result: dict[str, Any]) -> str:
    """Human-readable summary for the terminal."""
    return "\n".join([
        f"trained {result['train_steps']} steps in {result['train_seconds']:.0f} s (final loss {result['final_loss']:.4f})",
        f"precision {result['precision']} ({result['precision_reason']})",
        f"held-out caption exact match  {result['caption_exact_match']:.1%}  ({result['n_heldout_captions']} images)",
        f"held-out VQA accuracy         {result['vqa_accuracy']:.1%}  ({result['n_heldout_questions']} questions)",
        f"compositional (unseen colour-shape pairs): caption exact match "
        f"{result['compositional_caption_exact_match']:.1%}, VQA {result['compositional_vqa_accuracy']:.1%}",
        f"pictures: {result['out_dir']}/heldout_captions.png, {result['out_dir']}/loss.png",
        f"model:    {result['model_dir']}  (variant layout: variant.json names its builder)" if result.get("customized")
        else f"model:    {result['model_dir']}  (try: git-scratch caption {result['model_dir']} IMAGE)",
        f"total {result['seconds']:.0f} s",
    ])


def run_variant(name: str, description: str, customize: Callable[[GIT], GIT],
                argv: list[str] | None = None, builder: str | None = None) -> int:
    """The command line of scripts/extend_*.py: the demo with one change to the model and
    nothing else (data, seed, training config), so its figures compare with `git-scratch demo`."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(description=f"the shapes demo with {description}")
    parser.add_argument("--steps", type=int, help="training steps (default: configs/train/shapes-demo.json)")
    parser.add_argument("--out", default=f"runs/extend-{name}", help=f"output directory (default: runs/extend-{name})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    parser.add_argument("--train-images", type=int, help="fewer training images (tests); default: the demo's")
    parser.add_argument("--eval-images", type=int, help="fewer held-out and compositional images (tests)")
    args = parser.parse_args(argv)
    default = ShapesConfig(seed=args.seed)
    shapes = dataclasses.replace(default, n_train=args.train_images or default.n_train,
                                 n_heldout=args.eval_images or default.n_heldout,
                                 n_compositional=args.eval_images or default.n_compositional)
    result = run_demo(args.out, steps=args.steps, seed=args.seed, device=args.device,
                      progress=sys.stderr.isatty(), customize=customize, shapes=shapes, builder=builder)
    print(f"variant: {description}")
    print(report(result))
    if args.json:
        print(json.dumps({"variant": name, **{k: v for k, v in result.items() if k != "train_config"}}))
    return 0


def same_weights(new: nn.Module, old: nn.Module) -> nn.Module:
    """`new` holding `old`'s freshly initialised weights, for a `customize` that swaps a module
    (scripts/extend_*.py): the variant then differs from the baseline only in the change."""
    new.load_state_dict(old.state_dict())
    return new
