"""Greedy captions and answers of the demo's trained model under each accel precision, against fp32.

    .venv/bin/python scripts/precision_agreement.py                       # train the demo (minutes), then compare
    .venv/bin/python scripts/precision_agreement.py --model DIR --manifest heldout.jsonl

Trains the demo's model with the demo's own recipe (git_scratch.demo.recipe.run_demo) unless
--model names a checkpoint directory, then captions and answers every held-out example with
fp32 and with each setting of `accel.optimize` (bf16, int8, both, and compile where inductor
runs), and prints the share of outputs equal to fp32's and the largest logit difference on the
captions' images, teacher-forced with fp32's captions. docs/performance.md quotes its output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from git_scratch import GitTokenizer, ImageProcessor, ManifestDataset, accel, generate, load, predict, read_manifest

SETTINGS = {
    "bf16": {"dtype": torch.bfloat16},
    "int8": {"weights": "int8"},
    "bf16+int8": {"dtype": torch.bfloat16, "weights": "int8"},
    "compile": {"compile": True},
}
LOGIT_IMAGES = 64  # caption images whose logits are compared (all outputs are compared as text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained checkpoint directory (default: train the demo's model)")
    parser.add_argument("--manifest", help="the held-out manifest to decode (needed with --model)")
    parser.add_argument("--out", default="runs/precision_demo", help="where the demo trains (default: %(default)s)")
    parser.add_argument("--steps", type=int, help="demo training steps (default: the demo's)")
    parser.add_argument("--force", action="store_true", help="replace --out even if the demo did not make it")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ",".join(SETTINGS))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 on a busy machine, "
                        "where two threads wait for each other at every operation")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads {args.threads} must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        names = check_settings(args.settings)
        model_dir, manifest = trained_model(args)
        run(model_dir, manifest, names)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def check_settings(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        raise ValueError(f"--settings names {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    return names


def trained_model(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.model:
        if not args.manifest:
            raise ValueError("--model needs --manifest, the held-out examples to decode "
                             "(e.g. runs/demo/data/heldout.jsonl)")
        for path in (Path(args.model), Path(args.manifest)):
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist; check the path")
        return Path(args.model), Path(args.manifest)
    from git_scratch.demo.recipe import run_demo  # the demo's own recipe, data and schedule

    result = run_demo(args.out, steps=args.steps, force=args.force, progress=False)
    print(f"trained the demo: {result['train_steps']} steps in {result['train_seconds']:.0f} s, "
          f"held-out caption exact match {result['caption_exact_match']:.1%}, VQA {result['vqa_accuracy']:.1%}")
    return Path(result["model_dir"]), Path(result["out_dir"]) / "data" / "heldout.jsonl"


def run(model_dir: Path, manifest: Path, names: list[str]) -> None:
    tokenizer, processor = GitTokenizer.from_pretrained(model_dir), ImageProcessor.from_pretrained(model_dir)
    examples = read_manifest(manifest)
    dataset = ManifestDataset(examples, processor, tokenizer, preload=True)
    is_caption = [example.prompt is None for example in examples]
    images = torch.stack([dataset.pixel_values(e) for e, c in zip(examples, is_caption) if c][:LOGIT_IMAGES])

    with torch.no_grad():
        reference_ids = generate(accel.optimize(load(model_dir)), images, max_new_tokens=16)  # (B, T) fp32's captions

    def decode(settings: dict) -> tuple[list[str | None], torch.Tensor, float, str]:
        model = accel.optimize(load(model_dir), **settings)
        start = time.perf_counter()
        outputs = predict(model, dataset, batch_size=128, max_new_tokens=16)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            logits = model(images, reference_ids).float()  # (B, T, V) teacher-forced on fp32's captions
        return outputs, logits, seconds, accel.describe(model)

    reference, reference_logits, seconds, line = decode({})
    scale = float(reference_logits.abs().max())
    print(f"{len(examples)} held-out examples ({sum(is_caption)} captions), logits of {len(images)} images "
          f"(largest |logit| {scale:.1f}); fp32 decoded them in {seconds:.1f} s")
    print(f"  fp32: {line}")
    print("| setting | captions equal to fp32 | answers equal to fp32 | largest logit difference | decode time "
          "| applied |")
    print("|---|---|---|---|---|---|")
    for name in names:
        outputs, logits, seconds, line = decode(SETTINGS[name])
        same = [ours == theirs for ours, theirs in zip(outputs, reference)]
        captions = [s for s, c in zip(same, is_caption) if c]
        answers = [s for s, c in zip(same, is_caption) if not c]
        diff = float((logits - reference_logits).abs().max())
        print(f"| {name} | {rate(captions)} | {rate(answers)} | {diff:.3f} ({diff / scale:.2%}) "
              f"| {seconds:.1f} s | {line} |")
        for i in [i for i, s in enumerate(same) if not s][:3]:
            print(f"    differs: {examples[i].media.name} {examples[i].prompt or '(caption)'}: "
                  f"fp32 {reference[i]!r}, {name} {outputs[i]!r}")


def rate(same: list[bool]) -> str:
    return f"{sum(same) / len(same):.1%} ({sum(same)}/{len(same)})" if same else "-"


if __name__ == "__main__":
    raise SystemExit(main())
