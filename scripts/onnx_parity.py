"""ONNX Runtime against our PyTorch fp32 path at a full preset's shape (issue 18's git-base check).

The tests (tests/export) hold the tiny models to 1e-4 at every step; exporting git-base takes a
minute or more, so its check is this script. It writes a random checkpoint of the preset's shape
with the parity tests' init (tools/parity.random_checkpoint: std 2/sqrt(width), softmaxes far
from uniform), scales the decoder's branch output products by BRANCH_SCALE as scripts/bench.py
does (else every step of a random post-LN decoder picks the token the image alone favours, and a
token check compares one repeated id), exports it as `git-scratch export` does, and compares, on
two left-padded rows:

- the image keys and values of every layer,
- the logits of the prefill and of every step of a teacher-forced sequence (the same tokens fed
  to both sides whatever either predicts),
- greedy and 3-beam tokens, and `answer` over five left-padded questions.

    .venv/bin/python scripts/onnx_parity.py                  # git-base, 20 steps
    .venv/bin/python scripts/onnx_parity.py --preset git-large --steps 5

Prints one line per comparison and exits 1 when a difference exceeds --tolerance or a token differs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from git_scratch.checkpoints.files import load_pretrained
from git_scratch.export import decode as onnx_decode
from git_scratch.export.decode import load_onnx
from git_scratch.export.onnx import export_onnx
from git_scratch.generation import prefix as torch_prefix
from git_scratch.tools.parity import random_checkpoint

BRANCH_SCALE = 0.1  # scripts/bench.py's build_checkpoint says why


def largest(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return max(float((a - b).abs().max()) for a, b in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="git-base")
    parser.add_argument("--steps", type=int, default=20, help="teacher-forced steps after the prefill")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="onnx-parity-") as tmp:
        checkpoint = random_checkpoint(args.preset, Path(tmp) / "ckpt", args.seed)
        model = load_pretrained(checkpoint, fast=False)  # plain PyTorch: the reference tests/parity holds
        for block in model.blocks:
            block.attn.out.weight.mul_(BRANCH_SCALE)
            block.mlp.proj.weight.mul_(BRANCH_SCALE)
        onnx_model = load_onnx(export_onnx(model, Path(tmp) / "onnx"))
        cfg = model.cfg
        g = torch.Generator().manual_seed(args.seed)
        frames = (cfg.n_frames,) if cfg.n_frames else ()
        size = cfg.vision.image_size
        pixel_values = torch.randn(2, *frames, 3, size, size, generator=g)
        first = max(cfg.bos_id, cfg.eos_id, cfg.pad_id) + 1  # plain word ids
        words = torch.randint(first, cfg.vocab_size, (3,), generator=g).tolist()
        input_ids = torch.tensor([[cfg.pad_id] * 3 + [cfg.bos_id], [cfg.bos_id, *words]])  # (2, 4) left-padded
        attention_mask = (input_ids != cfg.pad_id).long()
        forced = torch.randint(first, cfg.vocab_size, (2, args.steps), generator=g)

        ours = torch_prefix.encode_prefix(model, pixel_values)
        theirs = onnx_decode.encode_prefix(onnx_model, pixel_values)
        results = {"image keys and values": largest(list(zip(ours.keys + ours.values, theirs.keys + theirs.values)))}
        index = torch.arange(2)
        state, logits = torch_prefix.prefill(model, ours, index, input_ids, attention_mask, args.steps)
        onnx_state, onnx_logits = onnx_decode.prefill(onnx_model, theirs, index, input_ids, attention_mask, args.steps)
        steps = [(logits, onnx_logits)]
        for step in range(args.steps):
            token = forced[:, step:step + 1]
            steps.append((torch_prefix.decode_step(model, state, token, 4 + step),
                          onnx_decode.decode_step(onnx_model, onnx_state, token, 4 + step)))
        results[f"logits, prefill and {args.steps} steps"] = largest(steps)
        scale = max(float(a.abs().max()) for a, _ in steps)

        failed = False
        for name, diff in results.items():
            ok = diff <= args.tolerance
            failed |= not ok
            print(f"{name:34s} max |ORT - PyTorch| = {diff:.2e}  ({'ok' if ok else 'OVER'} {args.tolerance:g})")
        print(f"{'':34s} largest |logit| = {scale:.1f}")
        questions = [[cfg.bos_id] + torch.randint(first, cfg.vocab_size, (n,), generator=g).tolist() for n in (3, 6, 4, 8, 5)]
        cases = {"greedy, 2 left-padded rows": lambda m: m.generate(pixel_values, input_ids, attention_mask, max_new_tokens=20),
                 "3-beam, 2 left-padded rows": lambda m: m.generate(pixel_values, input_ids, attention_mask,
                                                                    max_new_tokens=20, num_beams=3),
                 "answer, 5 questions": lambda m: m.answer(pixel_values[:1], questions, max_new_tokens=10)}
        for name, run in cases.items():
            expected, actual = run(model), run(onnx_model)
            same = torch.equal(expected, actual)
            failed |= not same
            distinct = len(set(expected[:, input_ids.shape[1]:].flatten().tolist()))
            print(f"{name:34s} tokens {'identical' if same else 'DIFFER'} ({distinct} distinct ids generated)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
