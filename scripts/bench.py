"""Benchmark git_scratch against transformers' GitForCausalLM on the same random weights.

    python scripts/bench.py                                 # git-base shape, every case, fp32, 2 threads
    python scripts/bench.py --shapes base,large --doc       # and rewrite its table in docs/performance.md
    python scripts/bench.py --threads 1 --clock cpu         # steady on a machine other jobs share
    python scripts/bench.py --cases caption,beam3 --repeats 5 --json bench.json
    python scripts/bench.py --dtype bf16 --no-memory        # bf16 on both sides, each against our fp32
    python scripts/bench.py --weights int8 --cases caption  # ours with int8 decoder weights (bf16 products)
    python scripts/bench.py --compile --theirs plain,compile  # torch.compile on both sides, plain theirs too
    python scripts/bench.py --cases batch8 --data-path 2    # and evaluation's data path, 2 workers
    python scripts/bench.py --runtime onnxruntime           # ONNX Runtime vs both: caption, decode_step
    python scripts/bench.py --device cuda --dtype bf16 --compile   # unchanged on a GPU

Both sides hold the same weights: a seeded random `transformers.GitForCausalLM` is saved with
`save_pretrained` and loaded into git_scratch through the converter, as a user loads
microsoft/git-base. Its init (`build_checkpoint`) gives softmaxes far from uniform and tokens that
vary from step to step, and the EOS logit bias is -1e4, so every run generates exactly the tokens
asked for. Every case runs on identical inputs, and the outputs are compared: in fp32 generated
tokens must be identical, and in every precision they must not all be one id.

Precisions. Ours takes `accel.optimize(model, dtype=..., weights=..., compile=...)` (--dtype bf16,
--weights int8, --compile); transformers is sped up the way a user would with the same effort:
`.to(torch.bfloat16)` for --dtype bf16, and `torch.compile` with --theirs compile. Outside plain fp32
each run first keeps our fp32 model's outputs and first-step logits, and reports every side's
tokens and largest logit difference against them (`max |Δ| vs fp32`); plain fp32 runs compare
ours with transformers directly.

Each case reports our median, transformers' median (for each --theirs variant), their ratio, and
our distance to the physical bound of this machine, measured in the same run: the best dense
matmul rate in the run's dtype, of the kernels the sides use, for the compute-bound work (image
encoder, prefix, prefill, training) and the read bandwidth of a buffer far larger than the caches
for each decode step (every weight of the decoder and the LM head is read once per step, in the
bytes it is stored in). Peak memory is the peak resident set (CPU) or peak allocation (CUDA) of a
child process that loads one side and runs one case (a compiled side runs it once first).

`--runtime onnxruntime` exports the checkpoint as `git-scratch export` does and adds a third
side, the exported graphs under generation's own loops (export/decode.py), to the cases that
only call generate(): its tokens must equal both others', its time is set against both and
against the same bound. It has no memory column (a child would have to export before it runs).

It is over 400 lines because a performance claim here comes from one script that runs both sides
in one process on the same inputs: the cases, the precisions and their fp32 reference, the bounds,
the memory children, the ONNX Runtime side and the doc table are its parts, in the order a run
takes them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from git_scratch import GIT, GitConfig, VisionConfig, accel, git_loss
from git_scratch.accel.onednn import ONEDNN_LINEAR
from git_scratch.accel.precision import BF16_PRODUCTS, PACKED_NAMES
from git_scratch.atomic import atomic_write_text
from git_scratch.checkpoints.hub import config_to_hf
from git_scratch.data.processor import ImageProcessor
from git_scratch.evaluation.datasets import EvalItem
from git_scratch.evaluation.run import decode_batch
from git_scratch.tools.parity import comparable_init

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
# wall: elapsed time. cpu: CPU time of the calling thread, which other processes cannot inflate
# by taking the CPU away; it measures all the work only when torch runs on that thread alone.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the dtypes accel.optimize takes
THEIRS = {"plain": "transformers", "compile": "transformers compiled"}  # --theirs variant -> its column


# CPU SDPA runs kernels the flop counter does not know; their FLOPs are those of the GPU ones.
def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# accel/onednn.py's oneDNN kernel: an ordinary (rows, K) x (K, N) product. Formulas get shapes.
def _onednn_linear_flop(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]


# accel/precision.py's int8 product: x (M, K) times an int8 weight (N, K), dequantized per channel.
def _int8_mm_flop(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]


# Once per process: the registry is torch's, and a second import of this file (tests load it by
# path, more than one of them) would otherwise register the same operator twice, which torch refuses.
for _op, _formula in ((torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, _cpu_sdpa_flop),
                      (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward, _cpu_sdpa_backward_flop),
                      (torch.ops.mkldnn._linear_pointwise, _onednn_linear_flop),
                      (torch.ops.aten._weight_int8pack_mm, _int8_mm_flop)):
    if _op not in flop_registry:
        register_flop_formula(_op)(_formula)


SHAPES: dict[str, Callable[[], GitConfig]] = {
    "base": lambda: GitConfig.from_name("git-base"),
    "large": lambda: GitConfig.from_name("git-large"),
    # For tests and smoke runs: seconds, every width different.
    "tiny": lambda: GitConfig(vocab_size=99, d_model=48, n_layer=2, n_head=4, d_ff=64, max_positions=64,
                              bos_id=1, eos_id=2, pad_id=0,
                              vision=VisionConfig(image_size=32, patch_size=8, d_model=32, n_layer=2, n_head=4, d_ff=37)),
}
BRANCH_SCALE = 0.1  # build_checkpoint: keeps the current token in the decoder's residual stream
NEW_TOKENS = 20


# --- inputs and models --------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    pixel_values: torch.Tensor  # (8, 3, H, W)
    questions: list[list[int]]  # 5 prompts, [bos] + question tokens, different lengths
    train_ids: torch.Tensor  # (8, 20)


def make_inputs(cfg: GitConfig, seed: int, device: torch.device) -> Inputs:
    """The same inputs in every process, from the seed alone; fp32 pixels, which both sides cast
    to their own dtype (ours in vision.py, transformers in its patch embedding)."""
    g = torch.Generator().manual_seed(seed + 1)
    size = cfg.vision.image_size
    pixel_values = torch.randn(8, 3, size, size, generator=g).to(device)
    first = max(cfg.bos_id, cfg.eos_id, cfg.pad_id) + 1  # plain word ids only
    lengths = (4, 7, 5, 9, 6)
    questions = [[cfg.bos_id] + torch.randint(first, cfg.vocab_size, (n - 1,), generator=g).tolist() for n in lengths]
    train_ids = torch.randint(first, cfg.vocab_size, (8, NEW_TOKENS), generator=g)
    train_ids[:, 0] = cfg.bos_id
    return Inputs(pixel_values, questions, train_ids.to(device))


def build_checkpoint(cfg: GitConfig, directory: Path, seed: int) -> None:
    """A seeded random transformers model in the official layout, EOS unreachable, whose greedy
    tokens vary from step to step.

    The stds are the parity tool's (tools/parity.comparable_init, 2 / sqrt(width)): attention far
    from uniform, so a wrong weight cannot hide. GIT's decoder is post-LayerNorm, LN(x + branch),
    and at that std each branch outweighs its input: by the last layer the current token was gone
    and every git-base step chose the token the image alone favoured (1 distinct token in each of
    8 captions of 20). The branches' output products (attention output, MLP output) are scaled by
    BRANCH_SCALE, so each step depends on its token: 17-20 distinct tokens in 20 on git-base."""
    import transformers

    data = config_to_hf(cfg)
    data["initializer_range"] = comparable_init(cfg.d_model)
    vision = {k: v for k, v in data.pop("vision_config").items() if k != "model_type"}
    vision["initializer_range"] = comparable_init(cfg.vision.d_model)
    for key in ("architectures", "model_type", "dtype"):
        data.pop(key)
    torch.manual_seed(seed)
    hf = transformers.GitForCausalLM(transformers.GitConfig(**data, vision_config=vision))
    with torch.no_grad():
        for layer in hf.git.encoder.layer:
            layer.attention.output.dense.weight.mul_(BRANCH_SCALE)
            layer.output.dense.weight.mul_(BRANCH_SCALE)
        hf.output.bias[cfg.eos_id] = -1e4
    hf.save_pretrained(directory, safe_serialization=True)


def load_ours(directory: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> GIT:
    """Our model as `git_scratch.load` gives it: in `dtype`, with accel's default kernels."""
    return GIT.from_pretrained(directory, dtype=dtype, device=device)


def with_precision(model: GIT, args: argparse.Namespace) -> GIT:
    """--dtype, --weights and --compile, through accel.optimize, in place."""
    dtype = DTYPES[args.dtype]
    return accel.optimize(model, dtype=None if dtype == torch.float32 else dtype,
                          weights=None if args.weights == "none" else args.weights, compile=args.compile)


def load_theirs(directory: Path, device: torch.device, dtype: torch.dtype, variant: str = "plain") -> Any:
    """transformers' model as a user speeds it up: in `dtype`, and with variant "compile" under
    torch.compile (in place, so generate()'s calls of the model run compiled; the image encoder
    too, which the encode case calls directly)."""
    import transformers

    transformers.logging.set_verbosity_error()
    hf = transformers.GitForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()
    if variant == "compile":
        hf.compile()
        hf.git.image_encoder.compile()
    return hf


# --- the cases ----------------------------------------------------------------------------------


def left_pad(questions: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(map(len, questions))
    ids = torch.full((len(questions), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, q in enumerate(questions):
        ids[row, longest - len(q):] = torch.tensor(q)
        mask[row, longest - len(q):] = 1
    return ids.to(device), mask.to(device)


def ours_loss(m: GIT, x: Inputs) -> torch.Tensor:
    return git_loss(m(x.pixel_values, x.train_ids), x.train_ids)


def theirs_loss(hf: Any, x: Inputs) -> torch.Tensor:
    return hf(input_ids=x.train_ids, pixel_values=x.pixel_values, labels=x.train_ids).loss


def train_step(loss_fn: Callable[[Any, Inputs], torch.Tensor]) -> Callable[[Any, Inputs], torch.Tensor]:
    def step(model: Any, x: Inputs) -> torch.Tensor:
        model.train()
        try:
            loss = loss_fn(model, x)
            loss.backward()
        finally:
            model.eval()
            model.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def ours_vqa_calls(m: GIT, x: Inputs) -> list[torch.Tensor]:
    device = x.pixel_values.device
    return [m.generate(x.pixel_values[:1], torch.tensor([q], device=device), max_new_tokens=5) for q in x.questions]


def theirs_vqa_calls(hf: Any, x: Inputs) -> list[torch.Tensor]:
    device = x.pixel_values.device
    return [hf.generate(pixel_values=x.pixel_values[:1], input_ids=torch.tensor([q], device=device), max_new_tokens=5)
            for q in x.questions]


def theirs_vqa_batched(hf: Any, x: Inputs) -> torch.Tensor:
    ids, mask = left_pad(x.questions, hf.config.pad_token_id, x.pixel_values.device)
    out = hf.generate(pixel_values=x.pixel_values[:1], input_ids=ids, attention_mask=mask, max_new_tokens=5)
    return out[:, ids.shape[1]:]  # the new tokens alone, as our answer() returns them (greedy: pad after EOS)


def ours_caption(images: int, new: int, beams: int = 1) -> Callable[[GIT, Inputs], torch.Tensor]:
    return lambda m, x: m.generate(x.pixel_values[:images], max_new_tokens=new, num_beams=beams)


def theirs_caption(images: int, new: int, beams: int = 1) -> Callable[[Any, Inputs], torch.Tensor]:
    return lambda hf, x: hf.generate(pixel_values=x.pixel_values[:images], max_new_tokens=new, num_beams=beams)


def ours_encode(m: GIT, x: Inputs) -> torch.Tensor:
    return m.encode_image(x.pixel_values[:1])


def theirs_encode(hf: Any, x: Inputs) -> torch.Tensor:
    return hf.git.visual_projection(hf.git.image_encoder(x.pixel_values[:1]).last_hidden_state)


# What `max |Δ| vs fp32` compares: a generating case's first-step logits (the same on both sides,
# from generate's own output_logits), the encoder's output, training's teacher-forced logits.
# Logits leave out EOS: its -1e4 bias is no model output, and its bf16 rounding alone is 16.
def without_eos(logits: torch.Tensor, eos_id: int) -> torch.Tensor:
    return logits.float().index_fill(-1, torch.tensor([eos_id], device=logits.device), 0.0)


def ours_first_logits(images: int, question: bool = False) -> Callable[[GIT, Inputs], torch.Tensor]:
    def probe(m: GIT, x: Inputs) -> torch.Tensor:
        prompt = torch.tensor([x.questions[0]], device=x.pixel_values.device) if question else None
        out = m.generate(x.pixel_values[:images], prompt, max_new_tokens=1, return_dict_in_generate=True,
                         output_logits=True)
        return without_eos(out.logits[0], m.cfg.eos_id)  # (images, vocab)

    return probe


def theirs_first_logits(images: int, question: bool = False) -> Callable[[Any, Inputs], torch.Tensor]:
    def probe(hf: Any, x: Inputs) -> torch.Tensor:
        prompt = torch.tensor([x.questions[0]], device=x.pixel_values.device) if question else None
        out = hf.generate(pixel_values=x.pixel_values[:images], input_ids=prompt, max_new_tokens=1,
                          return_dict_in_generate=True, output_logits=True)
        return without_eos(out.logits[0], hf.config.eos_token_id)  # (images, vocab)

    return probe


def ours_train_logits(m: GIT, x: Inputs) -> torch.Tensor:
    return without_eos(m(x.pixel_values, x.train_ids), m.cfg.eos_id)  # (8, 20, vocab)


def theirs_train_logits(hf: Any, x: Inputs) -> torch.Tensor:
    logits = hf(input_ids=x.train_ids, pixel_values=x.pixel_values).logits[:, -x.train_ids.shape[1]:]
    return without_eos(logits, hf.config.eos_token_id)  # (8, 20, vocab)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    ours: Callable[[GIT, Inputs], Any]
    theirs: Callable[[Any, Inputs], Any]
    check: str  # "tokens": identical ids; "close": max |difference| of tensors
    probe: tuple[Callable, Callable]  # (ours, theirs): the tensor `max |Δ| vs fp32` compares
    rows: int = 0  # decoding rows per step, and
    steps: int = 0  # decode steps after prefill: these are bounded by bandwidth, the rest by compute
    baseline: tuple[Callable, Callable] | None = None  # (ours, theirs): time = (case - baseline) / per
    per: int = 1
    grad: bool = False


CASES: dict[str, Case] = {c.name: c for c in [
    Case("encode", "image encoder + projection, 1 image", ours_encode, theirs_encode, "close",
         (ours_encode, theirs_encode)),
    Case("caption", f"greedy caption, 1 image, {NEW_TOKENS} new tokens",
         ours_caption(1, NEW_TOKENS), theirs_caption(1, NEW_TOKENS), "tokens",
         (ours_first_logits(1), theirs_first_logits(1)), rows=1, steps=NEW_TOKENS - 1),
    Case("decode_step", "one decode step after the prefix: (41 new tokens - 1) / 40",
         ours_caption(1, 41), theirs_caption(1, 41), "tokens", (ours_first_logits(1), theirs_first_logits(1)),
         rows=1, steps=1, baseline=(ours_caption(1, 1), theirs_caption(1, 1)), per=40),
    Case("beam3", f"beam search, 3 beams, 1 image, {NEW_TOKENS} new tokens",
         ours_caption(1, NEW_TOKENS, 3), theirs_caption(1, NEW_TOKENS, 3), "tokens",
         (ours_first_logits(1), theirs_first_logits(1)), rows=3, steps=NEW_TOKENS - 1),
    Case("batch8", f"greedy, batch of 8 images, {NEW_TOKENS} new tokens",
         ours_caption(8, NEW_TOKENS), theirs_caption(8, NEW_TOKENS), "tokens",
         (ours_first_logits(8), theirs_first_logits(8)), rows=8, steps=NEW_TOKENS - 1),
    Case("vqa5_calls", "5 questions about 1 image, 5 new tokens each, 5 generate calls",
         ours_vqa_calls, theirs_vqa_calls, "tokens", (ours_first_logits(1, True), theirs_first_logits(1, True)),
         rows=1, steps=5 * 4),
    Case("vqa5_batched", "the same 5 questions in one call (ours: model.answer; theirs: left-padded batch)",
         lambda m, x: m.answer(x.pixel_values[:1], x.questions, max_new_tokens=5), theirs_vqa_batched,
         "tokens", (ours_first_logits(1, True), theirs_first_logits(1, True)), rows=5, steps=4),
    Case("train", f"training step (forward + backward), batch 8, {NEW_TOKENS} tokens",
         train_step(ours_loss), train_step(theirs_loss), "close", (ours_train_logits, theirs_train_logits),
         grad=True),
]}
DEFAULT_CASES = {"base": list(CASES), "large": ["encode", "caption"], "tiny": list(CASES)}
def inference_only(args: argparse.Namespace) -> str | None:
    """Why our side cannot train in this setting, or None: int8 weights have no gradient, and bf16
    on a CPU with bf16 products holds its weights packed for inference (accel/precision.py; bf16
    training is autocast over fp32 weights, TrainConfig.precision, timed by the demo instead)."""
    if args.weights == "int8":
        return "--weights int8 has no gradient"
    if args.dtype == "bf16" and args.device == "cpu" and BF16_PRODUCTS:
        return "--dtype bf16 packs our weights for inference on this CPU"
    return None


def one_token_id(case: Case, out: Any) -> int | None:
    """The id every generated token is, when they are all one (the bench's weights must vary
    them, or the token check proves little); None otherwise. Every case generates at least 5
    tokens, so each output's last 5 columns are generated ones, never the prompt."""
    if case.check != "tokens":
        return None
    ids = torch.cat([t[..., -5:].reshape(-1).cpu() for t in (out if isinstance(out, list) else [out])])
    return int(ids[0]) if bool((ids == ids[0]).all()) else None


def compare(case: Case, ours: Any, theirs: Any) -> tuple[bool, str]:
    """(outputs agree, what was seen)."""
    if case.check == "tokens":
        ours, theirs = (ours, theirs) if isinstance(ours, list) else ([ours], [theirs])
        for a, b in zip(ours, theirs):
            if a.shape != b.shape:
                return False, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
            if not torch.equal(a.cpu(), b.cpu()):
                first = int((a != b).any(0).float().argmax())
                return False, f"tokens differ from position {first}"
        return True, "identical"
    diff = (ours.float() - theirs.float()).abs().max().item()
    return True, f"max diff {diff:.1e}"


# --- the machine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    device: str
    dtype: str
    threads: int
    gflops: float  # best dense matmul rate in this dtype, GFLOP/s
    bandwidth: float  # read bandwidth of a buffer far larger than the caches, GB/s
    cpu: str
    clock: str = "wall"  # what every time is measured with (CLOCKS)
    weights: str = "none"  # --weights: ours' decoder weights
    compiled: bool = False  # --compile: ours under torch.compile
    theirs: str = "plain"  # --theirs: transformers' variants, comma-separated

    def describe(self) -> str:
        ours = "".join([f", ours with {self.weights} weights" if self.weights != "none" else "",
                        ", ours compiled" if self.compiled else ""])
        return (f"{self.cpu}, {self.threads} threads, {self.dtype}{ours}, {self.clock} clock: matmul "
                f"{self.gflops:.3g} GFLOP/s, read bandwidth {self.bandwidth:.1f} GB/s")

    @property
    def key(self) -> str:
        """Names this setting's table in docs/performance.md: one per machine and setting."""
        extra = "".join([f" weights={self.weights}" if self.weights != "none" else "", " compile" if self.compiled else "",
                         f" theirs={self.theirs}" if self.theirs != "plain" else ""])
        return f"{self.device} {self.cpu} {self.dtype} threads={self.threads} clock={self.clock}{extra}"


def cpu_name() -> str:
    """The CPU's model name and the instructions that decide its kernels, e.g. "Intel(R) Xeon(R)
    Processor (AVX-512, AVX512-BF16, AMX)": hosts of one name have differed in them."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    isa = [label for flag, label in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"))
           if flag in flags] or (["AVX2"] if "avx2" in flags else [])
    return f"{name} ({', '.join(isa)})" if isa else name


def measure_machine(device: torch.device, dtype: torch.dtype, threads: int, clock: str = "wall") -> Machine:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    products = [lambda: a @ b]  # torch's default kernel: MKL for fp32 on CPU, cuBLAS on CUDA
    if device.type == "cpu" and dtype == torch.float32 and ONEDNN_LINEAR is not None:
        # torch's other CPU library: twice MKL's rate on an AVX-512 AMD host (accel/onednn.py), so the
        # bound is the better of the two, not what one library makes of the machine. (In bf16
        # `a @ b` already runs oneDNN where the CPU supports it.)
        products.append(lambda: ONEDNN_LINEAR(a, b, None, "none", [], ""))
    if device.type == "cpu" and dtype == torch.bfloat16 and BF16_PRODUCTS:
        # ours' bf16 kernel (accel/precision.py): oneDNN on a weight reordered once into its layout
        packed = torch.ops.mkldnn._reorder_linear_weight(b, 1)
        products.append(lambda: ONEDNN_LINEAR(a, packed, None, "none", [], ""))
    best = min(timed(product, device, clock) for product in products for _ in range(6))
    buffer = torch.ones(2**28, device=device)  # 1 GiB of fp32: 32x the L3 of a big server CPU
    read = min(timed(buffer.sum, device, clock) for _ in range(5))
    name = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    return Machine(str(device), str(dtype).removeprefix("torch."), threads, 2 * n**3 / best / 1e9,
                   buffer.numel() * 4 / read / 1e9, name, clock)


def cpu_ticks() -> tuple[int, int, int] | None:
    """(all ticks, busy ticks of the machine, ticks of this process) from Linux's /proc; over a
    timed round, busy - own is the work of other processes, which a shared machine adds to ours."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]  # guest time is in user
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime
    except OSError:
        return None
    return sum(fields), sum(fields) - fields[3] - fields[4], sum(map(int, own))  # idle, iowait


def others_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float:
    """Fraction of all CPUs that other processes used between two `cpu_ticks` readings; NaN off Linux."""
    if before is None or after is None:
        return float("nan")
    total, busy, own = (b - a for a, b in zip(before, after))
    return max(busy - own, 0) / max(total, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, clock: str = "wall") -> float:
    tick = CLOCKS[clock]
    sync(device)
    start = tick()
    fn()
    sync(device)
    return tick() - start


def warm_up(ours: Callable[[], Any], theirs: Callable[[], Any]) -> tuple[Any, Any, int]:
    """The first run of each side: both outputs, and our FLOPs (the counter slows only this run)."""
    with FlopCounterMode(display=False) as counter:
        got_ours = ours()
    return got_ours, theirs(), counter.get_total_flops()


def stored_tensors(part: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor `part` holds: parameters, buffers, and the weights accel keeps packed in
    oneDNN's layout (read as their shape and dtype; they are no Parameters)."""
    tensors = []
    for module in part.modules():
        tensors += [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if type(module) in PACKED_NAMES:
            tensors.append(getattr(module, PACKED_NAMES[type(module)]))
    return tensors


def bound_seconds(case: Case, model: GIT, flops: float, machine: Machine) -> float:
    """Roofline lower bound: compute-bound work at the matmul rate, plus each decode step at
    the slower of its FLOPs and reading every decoder and LM-head weight (and the cache) once."""
    if not case.steps:
        return flops / (machine.gflops * 1e9)
    cfg = model.cfg
    stored = [t for part in (model.blocks, model.lm_head) for t in stored_tensors(part)]
    weights = sum(t.numel() for t in stored)  # int8 layers: int8 weights and their scales (buffers)
    keys = cfg.vision.n_tokens + NEW_TOKENS  # a typical cache length
    step_flops = 2 * case.rows * weights + 4 * case.rows * cfg.n_layer * keys * cfg.d_model
    # the bytes as stored: fp32 4, bf16 2 (prepacked or not), int8 1 + a bf16 scale per row
    cache_item = model.embed.word.weight.element_size()  # the cache is in the activations' dtype
    step_bytes = sum(t.numel() * t.element_size() for t in stored) + \
        cache_item * case.rows * cfg.n_layer * 2 * keys * cfg.d_model
    step = max(step_flops / (machine.gflops * 1e9), step_bytes / (machine.bandwidth * 1e9))
    return max(flops - case.steps * step_flops, 0) / (machine.gflops * 1e9) + case.steps * step


def data_path_rate(image_size: int, workers: int, n_images: int = 96) -> float:
    """Images/s of evaluation's data path alone: JPEG decoding and the processor in DataLoader
    workers, through the same loader and collate as evaluation/run.py, on COCO-sized (640x480)
    random-noise JPEGs (which decode slower than photos), batches of 8, no model."""
    processor = ImageProcessor(size=image_size, crop_size=image_size)
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="git-bench-data-") as tmp:
        items = []
        for i in range(n_images):
            path = Path(tmp) / f"{i:05d}.jpg"
            Image.fromarray(torch.randint(0, 256, (480, 640, 3), generator=g, dtype=torch.uint8).numpy()).save(
                path, quality=90)
            items.append(EvalItem(i, path, False, None, ()))
        batches = [items[start:start + 8] for start in range(0, n_images, 8)]
        loader = DataLoader(batches, batch_size=None, num_workers=workers,
                            collate_fn=partial(decode_batch, processor=processor, n_frames=None))
        start = time.perf_counter()  # worker start-up included: an evaluation pays it too, once
        for _ in loader:
            pass
        return n_images / (time.perf_counter() - start)


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Our fp32 model's outputs of one case, which a run in another precision is measured against."""
    output: Any  # what `compare` takes: the tokens, the encoder's output, or training's eval-mode loss
    probe: torch.Tensor  # the case's probe (first-step logits, encoder output, teacher-forced logits), fp32


def compared_output(case: Case, ours_side: bool, model: Any, x: Inputs, output: Any) -> Any:
    """What `compare` takes from one side, given the case's output: the output itself, or for
    training the loss in eval mode (dropout makes training losses differ)."""
    if not case.grad:
        return output
    with torch.no_grad():
        return (ours_loss if ours_side else theirs_loss)(model, x)


def reference(case: Case, ours: GIT, x: Inputs) -> Reference:
    with torch.no_grad():
        output = compared_output(case, True, ours, x, None if case.grad else case.ours(ours, x))
        return Reference(output, case.probe[0](ours, x).float())


@dataclass
class Result:
    shape: str
    case: str
    what: str
    ours_s: float
    theirs_s: dict[str, float]  # --theirs variant -> transformers' median; NaN where it did not compile
    bound_s: float
    agree: bool  # plain fp32: ours equals transformers; otherwise every side equals our fp32 outputs
    check: str
    delta_ours: float  # max |Δ| of the probe: plain fp32, ours vs transformers; otherwise ours vs our fp32
    delta_theirs: float | None = None  # transformers' vs our fp32; None in plain fp32
    varied: bool = True  # our generated tokens are not all one id
    ours_peak_mb: float | None = None
    theirs_peak_mb: float | None = None
    others_cpu: float = float("nan")  # share of all CPUs other processes used during the timed runs

    def speedup(self, variant: str = "plain") -> float:
        return self.theirs_s.get(variant, float("nan")) / self.ours_s

    @property
    def to_bound(self) -> float:
        return self.ours_s / self.bound_s


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def first_runs(case: Case, sides: dict[str, Any], x: Inputs, compiled: set[str],
               log: Callable[[str], None]) -> tuple[float, dict[str, Any]]:
    """Our FLOPs (counted on one run of ours and of its baseline) and each side's first output,
    untimed. A compiled side runs outside the counter (its output is compared, and its shapes are
    compiled before timing: the baseline's too); a compiled transformers side that fails is
    dropped with one line."""
    with FlopCounterMode(display=False) as counter:
        outputs = {"ours": case.ours(sides["ours"], x)}
    flops = counter.get_total_flops()
    if case.baseline:
        with FlopCounterMode(display=False) as counter:
            case.baseline[0](sides["ours"], x)
        flops = (flops - counter.get_total_flops()) / case.per
    for name, model in sides.items():
        ours_side = name == "ours"
        if ours_side and name not in compiled:
            continue
        try:
            outputs[name] = (case.ours if ours_side else case.theirs)(model, x)
            if name in compiled and case.baseline:
                case.baseline[not ours_side](model, x)
        except Exception as error:  # torch.compile raises its backends' own kinds
            if ours_side or name not in compiled:
                raise
            outputs.pop(name, None)
            log(f"compile failed: {first_line(error)}")
    return flops, outputs


def run_case(shape: str, case: Case, ours: GIT, theirs: dict[str, Any], x: Inputs, repeats: int, machine: Machine,
             reference: Reference | None = None, log: Callable[[str], None] = print) -> Result:
    """First runs per side, whose outputs are compared (and our FLOPs counted), then `repeats`
    interleaved timed runs per side, so drift in the machine's load hits all alike. Without a
    `reference` (plain fp32) ours is compared with each transformers variant; with one, every
    side with our fp32 outputs. `theirs` maps --theirs variants to models (None: failed before)."""
    sides = {"ours": ours} | {f"theirs {v}": m for v, m in theirs.items() if m is not None}
    compiled = {name for name in sides if name == "theirs compile" or (name == "ours" and machine.compiled)}
    with torch.enable_grad() if case.grad else torch.no_grad():
        flops, outputs = first_runs(case, sides, x, compiled, log)
        sides = {name: model for name, model in sides.items() if name in outputs}
        if len(sides) == 1:
            raise RuntimeError("no transformers side ran (compile failed, above); add --theirs plain")
        got = {name: compared_output(case, name == "ours", sides[name], x, out) for name, out in outputs.items()}
        first = next(name for name in sides if name != "ours")  # the first --theirs variant that ran
        with torch.no_grad():
            probes = {name: (case.probe[0] if name == "ours" else case.probe[1])(sides[name], x).float()
                      for name in ("ours", first)}
        label = {"ours": "ours"} | {f"theirs {v}": THEIRS[v] for v in THEIRS}
        if reference is None:
            checks = {label[n]: compare(case, got["ours"], got[n]) for n in sides if n != "ours"}
            delta_ours, delta_theirs = (probes["ours"] - probes[first]).abs().max().item(), None
        else:
            checks = {label[n]: compare(case, got[n], reference.output) for n in sides}
            delta_ours, delta_theirs = ((probes[n] - reference.probe).abs().max().item() for n in ("ours", first))
        agree = all(ok for ok, _ in checks.values())
        seen = {text for _, text in checks.values()}
        check = seen.pop() if reference is None and len(seen) == 1 else \
            ", ".join(f"{who} {text}" for who, (_, text) in checks.items())
        same = one_token_id(case, outputs["ours"])
        if same is not None:
            agree, check = False, f"every generated token is id {same}; {check}"
        per_side, others = interleaved(case, sides, x, repeats, machine)
    return Result(shape, case.name, case.what, per_side["ours"],
                  {v: per_side.get(f"theirs {v}", float("nan")) for v in theirs},
                  bound_seconds(case, ours, flops, machine), agree, check, delta_ours, delta_theirs,
                  varied=same is None, others_cpu=others)


def interleaved(case: Case, sides: dict[str, Any], x: Inputs, repeats: int,
                machine: Machine) -> tuple[dict[str, float], float]:
    """Each side's median time of the case (less its baseline, per unit), from `repeats` rounds
    in which every side runs once in turn; and the share of the CPUs other processes took.
    Sides named "theirs..." run transformers' function of the case, the others ours."""
    device = torch.device(machine.device)
    theirs = {name: name.startswith("theirs") for name in sides}
    runs = {name: partial(case.theirs if theirs[name] else case.ours, model, x) for name, model in sides.items()}
    if case.baseline:
        runs |= {f"{name}_base": partial(case.baseline[theirs[name]], model, x) for name, model in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    before = cpu_ticks()
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run, device, machine.clock))
    others = others_share(before, cpu_ticks())
    med = {name: statistics.median(t) for name, t in times.items()}
    return {name: (med[name] - med.get(f"{name}_base", 0.0)) / case.per for name in sides}, others


def child_peak(side: str, shape: str, case: str, directory: Path, args: argparse.Namespace) -> float:
    """Peak memory (MB) of a fresh process that loads one side and runs one case once
    (transformers: its first --theirs variant)."""
    command = [sys.executable, __file__, "--child", side, "--shapes", shape, "--cases", case,
               "--checkpoint", str(directory), "--device", args.device, "--dtype", args.dtype,
               "--weights", args.weights, "--theirs", args.theirs.split(",")[0],
               "--threads", str(args.threads), "--seed", str(args.seed)] + ["--compile"] * args.compile
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"memory child {side}/{shape}/{case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def child_main(args: argparse.Namespace) -> int:
    """One side in the run's precision, loaded as a user would (ours: in the dtype, then accel;
    transformers: from_pretrained in the dtype); a compiled side runs the case once before the
    peak is reset, so compiling is not counted."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg, case = SHAPES[args.shapes](), CASES[args.cases]
    ours_side = args.child == "ours"
    model = (with_precision(load_ours(Path(args.checkpoint), device, dtype), args) if ours_side
             else load_theirs(Path(args.checkpoint), device, dtype, args.theirs))
    run = partial(case.ours if ours_side else case.theirs, model, make_inputs(cfg, args.seed, device))
    with torch.enable_grad() if case.grad else torch.no_grad():
        if args.compile if ours_side else args.theirs == "compile":
            run()
        reset_peak(device)
        run()
    print(json.dumps({"peak_mb": read_peak(device)}))
    return 0


def reset_peak(device: torch.device) -> None:
    """Peaks count from here: loading the checkpoint is not part of any case."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def read_peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM; peak memory needs Linux (or pass --no-memory)")


def strict(args: argparse.Namespace) -> bool:
    """Plain fp32 weights on our side: tokens must equal transformers', no fp32 reference needed."""
    return args.dtype == "fp32" and args.weights == "none"


@contextlib.contextmanager
def both_sides(shape: str, args: argparse.Namespace,
               cases: list[str]) -> Iterator[tuple[Path, GIT, dict[str, Any], Inputs, dict[str, Reference]]]:
    """The shape's seeded checkpoint in a temporary directory, loaded by us and by transformers
    (each --theirs variant), the inputs every case runs on, and outside plain fp32 our fp32
    outputs of the cases, taken before ours changes precision: (directory, ours, theirs, inputs,
    references)."""
    device = torch.device(args.device)
    cfg = SHAPES[shape]()
    with tempfile.TemporaryDirectory(prefix="git-bench-") as tmp:
        directory = Path(tmp) / shape
        build_checkpoint(cfg, directory, args.seed)
        x = make_inputs(cfg, args.seed, device)
        ours = load_ours(directory, device)
        references = {} if strict(args) else {name: reference(CASES[name], ours, x) for name in cases}
        with_precision(ours, args)
        theirs = {v: load_theirs(directory, device, DTYPES[args.dtype], v) for v in args.theirs.split(",")}
        yield directory, ours, theirs, x, references


def bench_shape(shape: str, cases: list[str], args: argparse.Namespace, machine: Machine,
                log: Callable[[str], None] = print) -> list[Result]:
    results = []
    with both_sides(shape, args, cases) as (directory, ours, theirs, x, references):
        for name in cases:
            result = run_case(shape, CASES[name], ours, theirs, x, args.repeats, machine, references.get(name), log)
            if math.isnan(result.theirs_s.get("compile", 0.0)):
                theirs["compile"] = None  # failed once (one line said why): the other cases skip it
            if args.memory:
                result.ours_peak_mb = child_peak("ours", shape, name, directory, args)
                if next(iter(theirs.values())) is not None:  # the child's variant did compile here
                    result.theirs_peak_mb = child_peak("theirs", shape, name, directory, args)
            log(format_row(result, list(theirs)))
            results.append(result)
    return results


# --- ONNX Runtime (--runtime onnxruntime) -------------------------------------------------------

# The cases whose `ours` only calls generate(), which the exported model has too (export/decode.py).
ONNX_CASES = ("caption", "decode_step")
ONNX_HEADER = ("| shape | case | ONNX Runtime | ours | transformers | ours / ORT | transformers / ORT | bound "
               "| ORT / bound | tokens vs ours, vs transformers | others' CPU |\n" + "|---" * 11 + "|")


@dataclass
class OnnxResult:
    shape: str
    case: str
    what: str
    onnx_s: float
    ours_s: float
    theirs_s: float
    bound_s: float  # the same machine bound as the PyTorch table's: ORT does the same work
    agree: bool  # ONNX Runtime's tokens equal ours and transformers'
    check: str
    others_cpu: float = float("nan")


def onnx_missing() -> str | None:
    """The one line to print instead of the ONNX case, or None when the extra is installed."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None:
        return "ONNX Runtime case skipped: onnxruntime or onnxscript is not installed (pip install -e '.[export]')"
    return None


def run_onnx_case(shape: str, case: Case, onnx_model: Any, ours: GIT, theirs: Any, x: Inputs, repeats: int,
                  machine: Machine) -> OnnxResult:
    """run_case with a third side: the exported graphs under generation's loops (case.ours runs them)."""
    with torch.no_grad():
        got_ours, got_theirs, flops = warm_up(lambda: case.ours(ours, x), lambda: case.theirs(theirs, x))
        got_onnx = case.ours(onnx_model, x)
        (to_ours, seen_ours), (to_theirs, seen_theirs) = (compare(case, got_onnx, got_ours),
                                                          compare(case, got_onnx, got_theirs))
        if case.baseline:
            base_flops = warm_up(lambda: case.baseline[0](ours, x), lambda: case.baseline[1](theirs, x))[2]
            flops = (flops - base_flops) / case.per
        per_side, others = interleaved(case, {"onnx": onnx_model, "ours": ours, "theirs": theirs}, x, repeats, machine)
    return OnnxResult(shape, case.name, case.what, per_side["onnx"], per_side["ours"], per_side["theirs"],
                      bound_seconds(case, ours, flops, machine), to_ours and to_theirs, f"{seen_ours}, {seen_theirs}",
                      others)


def bench_onnx(shape: str, cases: list[str], args: argparse.Namespace, machine: Machine,
               log: Callable[[str], None] = print) -> list[OnnxResult]:
    """The shape's checkpoint, exported as `git-scratch export` does, against both PyTorch sides.
    No peak-memory column: a memory child loads a checkpoint, and an ONNX one would export it first."""
    from git_scratch.export.decode import load_onnx
    from git_scratch.export.onnx import export_onnx

    results = []
    with both_sides(shape, args, cases) as (directory, ours, theirs_variants, x, _):
        theirs = theirs_variants["plain"]  # parse_args allows ONNX Runtime with plain fp32 only
        # beside the checkpoint, in the same temporary directory; export_onnx takes accel off for the export
        onnx_model = load_onnx(export_onnx(ours, directory.parent / "onnx"))
        for name in cases:
            result = run_onnx_case(shape, CASES[name], onnx_model, ours, theirs, x, args.repeats, machine)
            log(format_onnx_row(result))
            results.append(result)
    return results


def format_onnx_row(r: OnnxResult) -> str:
    outputs = r.check if r.agree else f"**{r.check}**"
    others = "-" if r.others_cpu != r.others_cpu else f"{100 * r.others_cpu:.0f}%"  # NaN: not measured
    return (f"| {r.shape} | {r.case} | {seconds(r.onnx_s)} | {seconds(r.ours_s)} | {seconds(r.theirs_s)} | "
            f"{r.ours_s / r.onnx_s:.2f}x | {r.theirs_s / r.onnx_s:.2f}x | {seconds(r.bound_s)} | "
            f"{r.onnx_s / r.bound_s:.2f} | {outputs} | {others} |")


def onnx_report(results: list[OnnxResult], machine: Machine, command: str) -> str:
    import onnxruntime
    import transformers

    versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime "
                f"{onnxruntime.__version__} (its default thread pool: one thread per physical core)")
    return "\n".join([f"Machine: {machine.describe()}. {versions}.", f"Command: `{command}`", "", ONNX_HEADER,
                      *map(format_onnx_row, results)])


# --- reporting --------------------------------------------------------------------------------

def header(variants: list[str], plain_fp32: bool) -> str:
    """The table's header: a time and a speed-up column per --theirs variant. `outputs` compares
    ours with transformers in plain fp32, and every side with our fp32 outputs otherwise."""
    theirs = [f"{THEIRS[v]} | speed-up{'' if v == 'plain' else ' vs compiled'}" for v in variants]
    outputs = "outputs" if plain_fp32 else "outputs vs our fp32"
    names = ["shape", "case", "ours", *theirs, "bound", "ours / bound", outputs, "max \\|Δ\\| vs fp32",
             "peak MB ours / theirs", "others' CPU"]
    columns = len(names) + len(variants)  # each variant's cell holds two columns
    return f"| {' | '.join(names)} |\n" + "|---" * columns + "|"


def seconds(s: float) -> str:
    if s != s:  # NaN: the side did not run (compile failed)
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s:.2f} s"


def format_row(r: Result, variants: list[str]) -> str:
    theirs = " | ".join(f"{seconds(r.theirs_s[v])} | {r.speedup(v):.2f}x".replace("nanx", "-") for v in variants)
    peak = "-" if r.ours_peak_mb is None else \
        f"{r.ours_peak_mb:.0f} / {'-' if r.theirs_peak_mb is None else f'{r.theirs_peak_mb:.0f}'}"
    outputs = r.check if r.agree else f"**{r.check}**"
    delta = f"{r.delta_ours:.1e}" if r.delta_theirs is None else f"{r.delta_ours:.1e} / {r.delta_theirs:.1e}"
    others = "-" if r.others_cpu != r.others_cpu else f"{100 * r.others_cpu:.0f}%"  # NaN: not measured
    return (f"| {r.shape} | {r.case} | {seconds(r.ours_s)} | {theirs} | {seconds(r.bound_s)} | {r.to_bound:.2f} | "
            f"{outputs} | {delta} | {peak} | {others} |")


@dataclass(frozen=True)
class Target:
    what: str
    value: float
    goal: float
    higher_is_better: bool = True
    at_bound: float | None = None  # for a speed-up: the one we would reach at the bound, theirs / bound

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        best = "-" if self.at_bound is None else f"{self.at_bound:.2f}"
        return f"| {self.what} | {self.value:.3f} | {sign} {self.goal:g} | {best} | {'met' if self.met else '**missed**'} |"


def targets(results: list[Result], machine: Machine) -> list[Target]:
    """Issue 20's targets for this run's setting, on the git-base shape: plain fp32 (speed-ups
    against plain transformers, the decode step against the bandwidth bound), bf16 (encode and
    decode step against their bounds, the caption against transformers in bf16 and compiled),
    int8 weights (the decode step), and in each the peak memory. A compiled run of ours has none."""
    got = {r.case: r for r in results if r.shape == "base"}
    out = []

    def speedup(case: str, what: str, goal: float, variant: str = "plain") -> None:
        theirs = got[case].theirs_s.get(variant, float("nan")) if case in got else float("nan")
        if theirs == theirs:  # NaN: that variant did not run, or did not compile
            out.append(Target(what, got[case].speedup(variant), goal,
                              at_bound=theirs / got[case].bound_s))

    def bound(case: str, what: str, goal: float) -> None:
        if case in got:
            out.append(Target(what, got[case].to_bound, goal, False))

    if machine.compiled:
        return out
    if machine.weights == "int8":
        bound("decode_step", "int8 weights: decode step, ours / bandwidth bound", 1.3)
    elif machine.dtype == "float32":
        speedup("caption", "caption greedy, speed-up", 1.3)
        speedup("beam3", "beam search 3 beams, speed-up", 2.0)
        speedup("batch8", "batch of 8, speed-up", 1.3)
        if "vqa5_batched" in got:
            answer, answer_bound = got["vqa5_batched"].ours_s, got["vqa5_batched"].bound_s
            for name, what, goal in (("vqa5_calls", "5 questions: transformers' 5 calls / our answer()", 5.0),
                                     ("vqa5_batched", "5 questions: transformers' batched call / our answer()", 2.5)):
                if name in got and "plain" in got[name].theirs_s:
                    theirs = got[name].theirs_s["plain"]
                    out.append(Target(what, theirs / answer, goal, at_bound=theirs / answer_bound))
        bound("decode_step", "decode step, ours / bandwidth bound", 1.3)
    elif machine.dtype == "bfloat16":
        bound("encode", "bf16: image encoder, ours / compute bound", 1.6)
        bound("decode_step", "bf16: decode step, ours / bandwidth bound", 1.3)
        speedup("caption", "bf16: caption, speed-up vs transformers bf16", 2.5)
        speedup("caption", "bf16: caption, speed-up vs transformers compiled bf16", 2.0, "compile")
    peaks = [r.ours_peak_mb / r.theirs_peak_mb for r in got.values()
             if r.ours_peak_mb is not None and r.theirs_peak_mb is not None]
    if peaks:
        out.append(Target("peak memory, worst case ours / theirs", max(peaks), 1.0, False))
    return out


def report(results: list[Result], machine: Machine, command: str) -> str:
    import transformers

    variants, plain_fp32 = machine.theirs.split(","), machine.dtype == "float32" and machine.weights == "none"
    lines = [f"Machine: {machine.describe()}. torch {torch.__version__}, transformers {transformers.__version__}.",
             f"Command: `{command}`", "", header(variants, plain_fp32),
             *(format_row(r, variants) for r in results)]
    found = targets(results, machine)
    if found:
        lines += ["", "| target (git-base shape) | measured | goal | at the bound | |", "|---|---|---|---|---|",
                  *(t.line() for t in found)]
    return "\n".join(lines)


def render_doc(text: str, table: str, key: str) -> str:
    """`text` with the part between the markers of `key` replaced by `table`; the markers are
    appended first if missing. One pair per setting, so each table is regenerated alone."""
    begin, end = f"<!-- bench {key} begin -->", f"<!-- bench {key} end -->"
    if begin not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n" if text.strip() else f"# Performance\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}\n{end}{tail}"


# --- entry point ------------------------------------------------------------------------------


def one_line_error(message: str) -> None:
    """argparse's error without its usage lines: the message names the flag and the fix."""
    print(f"bench.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = one_line_error
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="both sides' weights and activations (ours: accel.optimize(dtype=...))")
    parser.add_argument("--weights", choices=("none", "int8"), default="none",
                        help="int8: ours' decoder and LM-head weights in int8 (accel.optimize(weights='int8')); "
                             "inference only, so the train case is left out")
    parser.add_argument("--compile", action="store_true", help="ours under torch.compile (accel.optimize(compile=True))")
    parser.add_argument("--theirs", default="plain",
                        help="transformers' variants, comma-separated, each its own columns: plain (default), "
                             "compile (torch.compile, as a user would)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--shapes", default="base", help=f"comma-separated, of {', '.join(SHAPES)} (default base)")
    parser.add_argument("--cases", default=None, help=f"comma-separated, of {', '.join(CASES)} (default: all for "
                                                      "base, encode,caption for large)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall (default) or cpu: the thread's CPU time, steady on a busy machine; needs --threads 1")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side and case; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--doc", type=Path, nargs="?", const=DOC, help=f"rewrite the table in this file (default {DOC.relative_to(ROOT)})")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    parser.add_argument("--data-path", type=int, metavar="WORKERS", help="also time evaluation's data path alone "
                        "(decoding + processor) with this many DataLoader workers, against batch8's images/s")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="onnxruntime: export the checkpoint to ONNX and time ONNX Runtime against both PyTorch "
                             f"sides, fp32 on CPU, in the cases {', '.join(ONNX_CASES)} (the default there)")
    parser.add_argument("--child", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = args.theirs.split(",")
    for variant in variants:
        if variant not in THEIRS:
            parser.error(f"--theirs: unknown variant {variant!r}; choose from {', '.join(THEIRS)}")
    if len(set(variants)) < len(variants):
        parser.error(f"--theirs {args.theirs}: a variant is named twice; name each once")
    if inference_only(args) and args.cases and "train" in args.cases.split(","):
        parser.error(f"{inference_only(args)}, so the train case cannot run; drop train from --cases")
    if args.weights == "int8" and args.device != "cpu":
        parser.error("--weights int8 runs torch's CPU int8 kernel (accel/precision.py); use --device cpu")
    for shape in args.shapes.split(","):
        if shape not in SHAPES:
            parser.error(f"--shapes: unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    for case in (args.cases or "").split(",") if args.cases else []:
        if case not in CASES:
            parser.error(f"--cases: unknown case {case!r}; choose from {', '.join(CASES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device")
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu counts the calling thread only; use it with --threads 1 --device cpu")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.runtime == "onnxruntime":
        if args.device != "cpu" or args.dtype != "fp32":
            parser.error("--runtime onnxruntime runs the fp32 export on ORT's CPU provider; "
                         "pass --device cpu --dtype fp32")
        if args.weights != "none" or args.compile or args.theirs != "plain":
            parser.error("--runtime onnxruntime compares the plain fp32 export with plain PyTorch; "
                         "drop --weights, --compile and --theirs")
        if args.clock == "cpu":  # ORT's pool threads work beside the calling thread, whatever --threads says
            parser.error("--runtime onnxruntime: --clock cpu would miss ORT's pool threads; use --clock wall")
        args.cases = args.cases or ",".join(ONNX_CASES)
        unsupported = [case for case in args.cases.split(",") if case not in ONNX_CASES]
        if unsupported:
            parser.error(f"--runtime onnxruntime: case {unsupported[0]!r} has no ONNX side; "
                         f"choose from {', '.join(ONNX_CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    onnx = args.runtime == "onnxruntime"
    if onnx and onnx_missing():
        print(onnx_missing())
        return 0
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    machine = replace(measure_machine(device, dtype, args.threads, args.clock), weights=args.weights,
                      compiled=args.compile, theirs=args.theirs)
    print(f"Machine: {machine.describe()}")
    print(ONNX_HEADER if onnx else header(args.theirs.split(","), strict(args)))
    results = []
    for shape in args.shapes.split(","):
        cases = args.cases.split(",") if args.cases else \
            [case for case in DEFAULT_CASES[shape] if not (case == "train" and inference_only(args))]
        results += (bench_onnx if onnx else bench_shape)(shape, cases, args, machine)
    command = "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (onnx_report if onnx else report)(results, machine, command.strip())
    if args.data_path is not None:
        for shape in args.shapes.split(","):
            rate = data_path_rate(SHAPES[shape]().vision.image_size, args.data_path)
            model = next((f"{8 / r.ours_s:.3g}" for r in results if r.shape == shape and r.case == "batch8"), "-")
            text += (f"\n\nData path ({shape}): {rate:.1f} images/s with {args.data_path} workers; "
                     f"the model (batch8, greedy, {NEW_TOKENS} tokens): {model} images/s.")
    print(f"\n{text}")
    if args.json:
        payload = {"machine": asdict(machine), "results": [asdict(r) for r in results],
                   "targets": [] if onnx else [asdict(t) | {"met": t.met} for t in targets(results, machine)]}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.doc:
        old = args.doc.read_text() if args.doc.exists() else ""
        atomic_write_text(args.doc, render_doc(old, text, machine.key + (" runtime=onnxruntime" if onnx else "")))
    uniform = [f"{r.shape}/{r.case}" for r in results if not getattr(r, "varied", True)]
    if uniform:  # in any precision: a run whose tokens are all one id checked almost nothing
        print(f"every generated token is one id in {', '.join(uniform)}", file=sys.stderr)
        return 1
    mismatched = [f"{r.shape}/{r.case}" for r in results if not r.agree]
    if mismatched and (onnx or strict(args)):  # in other precisions tokens may differ from fp32's
        sides = "ours or transformers" if onnx else "transformers"
        print(f"outputs differ from {sides} in {', '.join(mismatched)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
