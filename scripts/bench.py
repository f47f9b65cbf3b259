"""Benchmark git_scratch against transformers' GitForCausalLM on the same random weights.

    python scripts/bench.py                                 # git-base shape, every case, fp32, 2 threads
    python scripts/bench.py --shapes base,large --doc       # and rewrite its table in docs/performance.md
    python scripts/bench.py --threads 1 --clock cpu         # steady on a machine other jobs share
    python scripts/bench.py --cases caption,beam3 --repeats 5 --json bench.json
    python scripts/bench.py --dtype bf16 --no-memory        # bf16 on both sides (tokens may differ)
    python scripts/bench.py --cases batch8 --data-path 2    # and evaluation's data path, 2 workers
    python scripts/bench.py --runtime onnxruntime           # ONNX Runtime vs both: caption, decode_step

Both sides hold the same weights: a seeded random `transformers.GitForCausalLM` is saved with
`save_pretrained` and loaded into git_scratch through the converter, as a user loads
microsoft/git-base. The init is large (softmaxes far from uniform, logits well separated) and
the EOS logit bias is -1e4, so every run generates exactly the tokens asked for. Every case runs
on identical inputs, and the outputs are compared: generated tokens must be identical.

Each case reports our median, transformers' median, their ratio, and our distance to the
physical bound of this machine, measured in the same run: the best dense matmul rate for the
compute-bound work (image encoder, prefix, prefill, training) and the read bandwidth of a
buffer far larger than the caches for each decode step (every weight of the decoder and the LM
head is read once per step). Peak memory is the peak resident set (CPU) or peak allocation
(CUDA) of a child process that loads one side and runs one case.

`--runtime onnxruntime` exports the checkpoint as `git-scratch export` does and adds a third
side, the exported graphs under generation's own loops (export/decode.py), to the cases that
only call generate(): its tokens must equal both others', its time is set against both and
against the same bound. It has no memory column (a child would have to export before it runs).

It is over 400 lines because a performance claim here comes from one script that runs both sides
in one process on the same inputs: the cases, the bounds, the memory children, the ONNX Runtime
side and the doc table are its parts, in the order a run takes them.
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
from dataclasses import asdict, dataclass
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

from git_scratch import GIT, GitConfig, VisionConfig, git_loss
from git_scratch.accel.onednn import ONEDNN_LINEAR
from git_scratch.atomic import atomic_write_text
from git_scratch.checkpoints.hub import config_to_hf
from git_scratch.data.processor import ImageProcessor
from git_scratch.evaluation.datasets import EvalItem
from git_scratch.evaluation.run import decode_batch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
# wall: elapsed time. cpu: CPU time of the calling thread, which other processes cannot inflate
# by taking the CPU away; it measures all the work only when torch runs on that thread alone.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# CPU SDPA runs kernels the flop counter does not know; their FLOPs are those of the GPU ones.
def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# accel/onednn.py's oneDNN kernel: an ordinary (rows, K) x (K, N) product. Formulas get shapes.
def _onednn_linear_flop(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]


# Once per process: the registry is torch's, and a second import of this file (tests load it by
# path, more than one of them) would otherwise register the same operator twice, which torch refuses.
for _op, _formula in ((torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, _cpu_sdpa_flop),
                      (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward, _cpu_sdpa_backward_flop),
                      (torch.ops.mkldnn._linear_pointwise, _onednn_linear_flop)):
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
INIT_STD = 0.1  # large enough that greedy and beam choices are far from ties, small enough for fp32 parity
NEW_TOKENS = 20


# --- inputs and models --------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    pixel_values: torch.Tensor  # (8, 3, H, W)
    questions: list[list[int]]  # 5 prompts, [bos] + question tokens, different lengths
    train_ids: torch.Tensor  # (8, 20)


def make_inputs(cfg: GitConfig, seed: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    """The same inputs in every process, from the seed alone."""
    g = torch.Generator().manual_seed(seed + 1)
    size = cfg.vision.image_size
    pixel_values = torch.randn(8, 3, size, size, generator=g).to(device, dtype)
    first = max(cfg.bos_id, cfg.eos_id, cfg.pad_id) + 1  # plain word ids only
    lengths = (4, 7, 5, 9, 6)
    questions = [[cfg.bos_id] + torch.randint(first, cfg.vocab_size, (n - 1,), generator=g).tolist() for n in lengths]
    train_ids = torch.randint(first, cfg.vocab_size, (8, NEW_TOKENS), generator=g)
    train_ids[:, 0] = cfg.bos_id
    return Inputs(pixel_values, questions, train_ids.to(device))


def build_checkpoint(cfg: GitConfig, directory: Path, seed: int) -> None:
    """A seeded random transformers model in the official layout, EOS unreachable."""
    import transformers

    data = config_to_hf(cfg.replace(init_std=INIT_STD))
    vision = {k: v for k, v in data.pop("vision_config").items() if k != "model_type"}
    for key in ("architectures", "model_type", "dtype"):
        data.pop(key)
    torch.manual_seed(seed)
    hf = transformers.GitForCausalLM(transformers.GitConfig(**data, vision_config=vision))
    with torch.no_grad():
        hf.output.bias[cfg.eos_id] = -1e4
    hf.save_pretrained(directory, safe_serialization=True)


def load_ours(directory: Path, device: torch.device, dtype: torch.dtype) -> GIT:
    return GIT.from_pretrained(directory, dtype=dtype, device=device)


def load_theirs(directory: Path, device: torch.device, dtype: torch.dtype) -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.GitForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()


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


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    ours: Callable[[GIT, Inputs], Any]
    theirs: Callable[[Any, Inputs], Any]
    check: str  # "tokens": identical ids; "close": max |difference| of tensors
    rows: int = 0  # decoding rows per step, and
    steps: int = 0  # decode steps after prefill: these are bounded by bandwidth, the rest by compute
    baseline: tuple[Callable, Callable] | None = None  # (ours, theirs): time = (case - baseline) / per
    per: int = 1
    grad: bool = False


CASES: dict[str, Case] = {c.name: c for c in [
    Case("encode", "image encoder + projection, 1 image",
         lambda m, x: m.encode_image(x.pixel_values[:1]),
         lambda hf, x: hf.git.visual_projection(hf.git.image_encoder(x.pixel_values[:1]).last_hidden_state),
         "close"),
    Case("caption", f"greedy caption, 1 image, {NEW_TOKENS} new tokens",
         ours_caption(1, NEW_TOKENS), theirs_caption(1, NEW_TOKENS), "tokens", rows=1, steps=NEW_TOKENS - 1),
    Case("decode_step", "one decode step after the prefix: (41 new tokens - 1) / 40",
         ours_caption(1, 41), theirs_caption(1, 41), "tokens", rows=1, steps=1,
         baseline=(ours_caption(1, 1), theirs_caption(1, 1)), per=40),
    Case("beam3", f"beam search, 3 beams, 1 image, {NEW_TOKENS} new tokens",
         ours_caption(1, NEW_TOKENS, 3), theirs_caption(1, NEW_TOKENS, 3), "tokens", rows=3, steps=NEW_TOKENS - 1),
    Case("batch8", f"greedy, batch of 8 images, {NEW_TOKENS} new tokens",
         ours_caption(8, NEW_TOKENS), theirs_caption(8, NEW_TOKENS), "tokens", rows=8, steps=NEW_TOKENS - 1),
    Case("vqa5_calls", "5 questions about 1 image, 5 new tokens each, 5 generate calls",
         ours_vqa_calls, theirs_vqa_calls, "tokens", rows=1, steps=5 * 4),
    Case("vqa5_batched", "the same 5 questions in one call (ours: model.answer; theirs: left-padded batch)",
         lambda m, x: m.answer(x.pixel_values[:1], x.questions, max_new_tokens=5), theirs_vqa_batched,
         "tokens", rows=5, steps=4),
    Case("train", f"training step (forward + backward), batch 8, {NEW_TOKENS} tokens",
         train_step(ours_loss), train_step(theirs_loss), "close", grad=True),
]}
DEFAULT_CASES = {"base": list(CASES), "large": ["encode", "caption"], "tiny": list(CASES)}


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

    def describe(self) -> str:
        return (f"{self.cpu}, {self.threads} threads, {self.dtype}, {self.clock} clock: matmul {self.gflops:.3g} "
                f"GFLOP/s, read bandwidth {self.bandwidth:.1f} GB/s")

    @property
    def key(self) -> str:
        """Names this setting's table in docs/performance.md."""
        return f"{self.device} {self.dtype} threads={self.threads} clock={self.clock}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure_machine(device: torch.device, dtype: torch.dtype, threads: int, clock: str = "wall") -> Machine:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    products = [lambda: a @ b]  # torch's default kernel: MKL for fp32 on CPU
    if device.type == "cpu" and dtype == torch.float32 and ONEDNN_LINEAR is not None:
        # torch's other CPU library: twice MKL's rate on an AVX-512 AMD host (accel/onednn.py), so the
        # bound is the better of the two, not what one library makes of the machine. (In bf16
        # `a @ b` already runs oneDNN where the CPU supports it; fp16 it does not take at all.)
        products.append(lambda: ONEDNN_LINEAR(a, b, None, "none", [], ""))
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


def bound_seconds(case: Case, model: GIT, flops: float, machine: Machine) -> float:
    """Roofline lower bound: compute-bound work at the matmul rate, plus each decode step at
    the slower of its FLOPs and reading every decoder and LM-head weight (and the cache) once."""
    if not case.steps:
        return flops / (machine.gflops * 1e9)
    cfg = model.cfg
    weights = sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.lm_head.parameters())
    keys = cfg.vision.n_tokens + NEW_TOKENS  # a typical cache length
    step_flops = 2 * case.rows * weights + 4 * case.rows * cfg.n_layer * keys * cfg.d_model
    item = next(model.parameters()).element_size()
    step_bytes = item * (weights + case.rows * cfg.n_layer * 2 * keys * cfg.d_model)
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


@dataclass
class Result:
    shape: str
    case: str
    what: str
    ours_s: float
    theirs_s: float
    bound_s: float
    agree: bool
    check: str
    ours_peak_mb: float | None = None
    theirs_peak_mb: float | None = None
    others_cpu: float = float("nan")  # share of all CPUs other processes used during the timed runs

    @property
    def speedup(self) -> float:
        return self.theirs_s / self.ours_s

    @property
    def to_bound(self) -> float:
        return self.ours_s / self.bound_s


def run_case(shape: str, case: Case, ours: GIT, theirs: Any, x: Inputs, repeats: int, machine: Machine) -> Result:
    """One warm-up run per side, whose outputs are compared (and our FLOPs counted), then
    `repeats` interleaved timed runs per side, so drift in the machine's load hits both alike."""
    with torch.enable_grad() if case.grad else torch.no_grad():
        got_ours, got_theirs, flops = warm_up(lambda: case.ours(ours, x), lambda: case.theirs(theirs, x))
        agree, seen = compare(case, got_ours, got_theirs)
        if case.grad:  # dropout makes training losses differ: compare them in eval mode
            with torch.no_grad():
                agree, seen = compare(case, ours_loss(ours, x), theirs_loss(theirs, x))
        if case.baseline:
            flops = (flops - warm_up(lambda: case.baseline[0](ours, x), lambda: case.baseline[1](theirs, x))[2]) / case.per
        per_side, others = interleaved(case, {"ours": ours, "theirs": theirs}, x, repeats, machine)
    return Result(shape, case.name, case.what, per_side["ours"], per_side["theirs"],
                  bound_seconds(case, ours, flops, machine), agree, seen, others_cpu=others)


def interleaved(case: Case, sides: dict[str, Any], x: Inputs, repeats: int,
                machine: Machine) -> tuple[dict[str, float], float]:
    """Each side's median time of the case (less its baseline, per unit), from `repeats` rounds
    in which every side runs once in turn; and the share of the CPUs other processes took."""
    device = torch.device(machine.device)
    runs = {name: partial(case.theirs if name == "theirs" else case.ours, model, x) for name, model in sides.items()}
    if case.baseline:
        runs |= {f"{name}_base": partial(case.baseline[name == "theirs"], model, x) for name, model in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    before = cpu_ticks()
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run, device, machine.clock))
    others = others_share(before, cpu_ticks())
    med = {name: statistics.median(t) for name, t in times.items()}
    return {name: (med[name] - med.get(f"{name}_base", 0.0)) / case.per for name in sides}, others


def child_peak(side: str, shape: str, case: str, directory: Path, args: argparse.Namespace) -> float:
    """Peak memory (MB) of a fresh process that loads one side and runs one case once."""
    command = [sys.executable, __file__, "--child", side, "--shapes", shape, "--cases", case,
               "--checkpoint", str(directory), "--device", args.device, "--dtype", args.dtype,
               "--threads", str(args.threads), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"memory child {side}/{shape}/{case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def child_main(args: argparse.Namespace) -> int:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg, case = SHAPES[args.shapes](), CASES[args.cases]
    load = load_ours if args.child == "ours" else load_theirs
    model = load(Path(args.checkpoint), device, dtype)
    x = make_inputs(cfg, args.seed, device, dtype)
    reset_peak(device)
    with torch.enable_grad() if case.grad else torch.no_grad():
        (case.ours if args.child == "ours" else case.theirs)(model, x)
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


@contextlib.contextmanager
def both_sides(shape: str, args: argparse.Namespace) -> Iterator[tuple[Path, GIT, Any, Inputs]]:
    """The shape's seeded checkpoint in a temporary directory, loaded by us and by transformers,
    and the inputs every case runs on: (directory, ours, theirs, inputs)."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg = SHAPES[shape]()
    with tempfile.TemporaryDirectory(prefix="git-bench-") as tmp:
        directory = Path(tmp) / shape
        build_checkpoint(cfg, directory, args.seed)
        ours, theirs = load_ours(directory, device, dtype), load_theirs(directory, device, dtype)
        yield directory, ours, theirs, make_inputs(cfg, args.seed, device, dtype)


def bench_shape(shape: str, cases: list[str], args: argparse.Namespace, machine: Machine,
                log: Callable[[str], None] = print) -> list[Result]:
    results = []
    with both_sides(shape, args) as (directory, ours, theirs, x):
        for name in cases:
            case = CASES[name]
            result = run_case(shape, case, ours, theirs, x, args.repeats, machine)
            if args.memory:
                result.ours_peak_mb = child_peak("ours", shape, name, directory, args)
                result.theirs_peak_mb = child_peak("theirs", shape, name, directory, args)
            log(format_row(result))
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
    with both_sides(shape, args) as (directory, ours, theirs, x):
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

HEADER = ("| shape | case | ours | transformers | speed-up | bound | ours / bound | outputs | peak MB ours / theirs "
          "| others' CPU |\n|---|---|---|---|---|---|---|---|---|---|")


def seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s:.2f} s"


def format_row(r: Result) -> str:
    peak = f"{r.ours_peak_mb:.0f} / {r.theirs_peak_mb:.0f}" if r.ours_peak_mb is not None else "-"
    outputs = r.check if r.agree else f"**{r.check}**"
    others = "-" if r.others_cpu != r.others_cpu else f"{100 * r.others_cpu:.0f}%"  # NaN: not measured
    return (f"| {r.shape} | {r.case} | {seconds(r.ours_s)} | {seconds(r.theirs_s)} | {r.speedup:.2f}x | "
            f"{seconds(r.bound_s)} | {r.to_bound:.2f} | {outputs} | {peak} | {others} |")


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


def targets(results: list[Result]) -> list[Target]:
    """The issue's targets, for the git-base shape."""
    got = {r.case: r for r in results if r.shape == "base"}
    out = []
    speedups = {"caption": ("caption greedy, speed-up", 2.0), "beam3": ("beam search 3 beams, speed-up", 3.0),
                "batch8": ("batch of 8, speed-up", 1.3), "train": ("training step, speed-up", 1.2)}
    for name, (what, goal) in speedups.items():
        if name in got:
            out.append(Target(what, got[name].speedup, goal, at_bound=got[name].theirs_s / got[name].bound_s))
    if "decode_step" in got:
        out.append(Target("decode step, ours / bandwidth bound", got["decode_step"].to_bound, 2.0, False))
    if "encode" in got:
        out.append(Target("image encoder, ours / compute bound", got["encode"].to_bound, 1.25, False))
    if "vqa5_batched" in got:
        answer, bound = got["vqa5_batched"].ours_s, got["vqa5_batched"].bound_s
        for name, what, goal in (("vqa5_calls", "5 questions: transformers' 5 calls / our answer()", 5.0),
                                 ("vqa5_batched", "5 questions: transformers' batched call / our answer()", 2.5)):
            if name in got:
                out.append(Target(what, got[name].theirs_s / answer, goal, at_bound=got[name].theirs_s / bound))
    peaks = [r.ours_peak_mb / r.theirs_peak_mb for r in got.values() if r.ours_peak_mb is not None]
    if peaks:
        out.append(Target("peak memory, worst case ours / theirs", max(peaks), 1.0, False))
    return out


def report(results: list[Result], machine: Machine, command: str) -> str:
    import transformers

    lines = [f"Machine: {machine.describe()}. torch {torch.__version__}, transformers {transformers.__version__}.",
             f"Command: `{command}`", "", HEADER, *map(format_row, results)]
    found = targets(results) if machine.dtype == "float32" else []  # the issue sets them for fp32
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="both sides' weights and activations")
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
    machine = measure_machine(device, dtype, args.threads, args.clock)
    print(f"Machine: {machine.describe()}")
    print(ONNX_HEADER if onnx else HEADER)
    results = []
    for shape in args.shapes.split(","):
        cases = args.cases.split(",") if args.cases else DEFAULT_CASES[shape]
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
                   "targets": [] if onnx else [asdict(t) | {"met": t.met} for t in targets(results)]}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.doc:
        old = args.doc.read_text() if args.doc.exists() else ""
        atomic_write_text(args.doc, render_doc(old, text, machine.key + (" runtime=onnxruntime" if onnx else "")))
    mismatched = [f"{r.shape}/{r.case}" for r in results if not r.agree]
    if mismatched and dtype == torch.float32:
        sides = "ours or transformers" if onnx else "transformers"
        print(f"outputs differ from {sides} in {', '.join(mismatched)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
