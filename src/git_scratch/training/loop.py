"""Training: teacher forcing with GIT's loss, on one CPU, one GPU or many processes (torchrun).

One run is one `TrainConfig`. The batch order is a pure function of (seed, step), so a run
resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen, and
N processes with batch b see the same global batches as one process with batch N*b.

The loss of a step is the SUM of token losses divided by the number of label tokens in the
whole global step (all micro-batches, all ranks), so gradient accumulation and DDP's gradient
averaging give exactly the gradient of the mean over the global batch.

The file runs over 400 lines because exact resume is one contract between its parts, read
together: the config, the schedule, the batch order, the checkpoint and the loop that saves it.
What resuming checks and Ctrl-C needs is in resume.py; evaluation and logging in monitor.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .. import accel
from ..atomic import atomic_directory, atomic_write, atomic_write_text
from ..checkpoints.files import write_model_files
from ..checkpoints.hub import check_official_layout
from ..checkpoints.variant import (
    build_variant,
    builder_of,
    check_builder,
    is_variant,
    load_variant_weights,
    read_variant,
    set_builder,
    write_variant_files,
)
from ..config import GitConfig
from ..data.manifest import IGNORE, ManifestDataset, collate, read_manifest
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..model.git import GIT
from .loss import LOSSES, token_loss
from .monitor import evaluate_held_out, require_tensorboard, warn_unknown_tokens, write_scalars
from .precision import autocast, check_precision, resolve_precision
from .resume import check_resume, ctrl_c_held, resume_command, resume_optimizer, rng_states, set_rng_states

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    train_manifest: str = ""  # the training data, a JSONL manifest (data/manifest.py); required
    out_dir: str = "runs/train"  # checkpoints/, model/, metrics.jsonl, loss.png
    init: str | None = None  # checkpoint directory to fine-tune; None trains `model` from scratch
    model: str = "git-base"  # preset name or path to a git_scratch config JSON (scratch only)
    tokenizer: str | None = None  # directory with tokenizer.json; defaults to `init`
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-5  # peak learning rate, reached after warmup
    vision_lr: float | None = None  # None: same as lr; 0: the image encoder is frozen
    weight_decay: float = 0.01  # on weight matrices only, never on norms, biases or embeddings
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's decay rates of the gradient's mean and square
    warmup_steps: int = 100  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0  # the rate at the last step, as a fraction of lr
    clip_norm: float = 1.0  # 0 disables clipping
    label_smoothing: float = 0.0  # share of each target's probability spread over the vocabulary; 0: none
    loss: str = "cross_entropy"  # or "original_smooth": the original's smoothed KL, eps 0.1 (training/loss.py)
    max_text_len: int | None = None  # None: texts whole; 40: the original's truncation (data/manifest.py)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    precision: str = "auto"  # bf16: autocast over fp32 weights (training/precision.py); fp32; auto: bf16 on CUDA only
    num_workers: int = 0  # DataLoader worker processes
    preload: bool = False  # decode all images once into memory (small datasets)
    pack: bool = True  # one row per image with all its texts: the image is encoded once (data/manifest.py)
    seed: int = 0  # batch order, dropout and a fresh model's initial weights
    save_every: int = 0  # steps between checkpoints; 0: only the final one
    keep_last: int = 2  # checkpoints kept on disk
    log_every: int = 10  # steps between writes of metrics.jsonl
    device: str = "cpu"  # torch device: cpu, cuda, cuda:N, mps
    resume: bool = False  # continue from the newest checkpoint in out_dir
    eval_manifest: str | None = None  # held-out JSONL manifest to score during training; None: no evaluation
    eval_every: int = 0  # steps between evaluations of eval_manifest; 0: after the last step only
    tensorboard: bool = False  # also write the metrics to out_dir/tensorboard (pip install 'git_scratch[tensorboard]')

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"training config field {name} = {value!r} must be a positive integer; "
                                 "fix it in the config file or flag")
        for name in ("warmup_steps", "save_every", "num_workers", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"training config field {name} = {value!r} must be a whole number >= 0; "
                                 "fix it in the config file or flag")
        if not self.lr > 0 or (self.vision_lr is not None and not self.vision_lr >= 0):
            raise ValueError(f"training config: lr = {self.lr!r} must be > 0 and vision_lr = {self.vision_lr!r} "
                             ">= 0; fix the rates")
        if self.loss not in LOSSES:
            raise ValueError(f"training config field loss = {self.loss!r} is not one of {', '.join(LOSSES)}; "
                             "fix it in the config file or flag")
        if self.loss == "original_smooth" and self.label_smoothing:
            raise ValueError(f"training config: label_smoothing = {self.label_smoothing} with loss = "
                             "'original_smooth', which smooths by its own eps 0.1; set label_smoothing to 0 or use "
                             "loss 'cross_entropy'")
        length = self.max_text_len
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 3):
            raise ValueError(f"training config field max_text_len = {self.max_text_len!r} must be an integer >= 3 "
                             "or null; use 40 for the original's truncation, null for none")
        check_precision(self.precision)
        if self.eval_every and not self.eval_manifest:
            raise ValueError(f"training config: eval_every = {self.eval_every} but no eval_manifest; "
                             "pass --eval-manifest FILE.jsonl, or drop --eval-every")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a training config ({e})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        try:
            return cls(**{**data, **overrides})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


# --- optimizer and schedule ---------------------------------------------------------------------


def param_groups(model: GIT, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: decay only weight matrices of Linear/Conv layers; the image encoder may get
    its own learning rate or be frozen."""
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    decay_ids |= {id(m.in_proj_weight) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    vision_ids = {id(p) for p in model.vision.parameters()}
    vision_lr = cfg.lr if cfg.vision_lr is None else cfg.vision_lr
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if id(p) in vision_ids and vision_lr == 0:
            p.requires_grad_(False)
            continue
        groups.setdefault((id(p) in vision_ids, id(p) in decay_ids), []).append(p)
    return [{"params": params, "lr": vision_lr if is_vision else cfg.lr,
             "weight_decay": cfg.weight_decay if decays else 0.0}
            for (is_vision, decays), params in sorted(groups.items())]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine to min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# --- batches ----------------------------------------------------------------------------------


class StepBatches:
    """Index lists for micro-batches from `start_step` on: epoch e is a permutation seeded by
    (seed, e); rank r takes its slice of each global batch. Nothing to save for resuming."""

    def __init__(self, n: int, cfg: TrainConfig, rank: int, world: int, start_step: int) -> None:
        self.n, self.cfg, self.rank, self.world, self.start = n, cfg, rank, world, start_step
        self.global_batch = cfg.batch_size * world
        if n < self.global_batch:
            raise ValueError(f"{n} examples cannot fill one global batch of {self.global_batch} "
                             "(batch_size x processes); lower --batch-size")

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n // self.global_batch  # drop the ragged end of each epoch
        perm, perm_epoch = None, -1
        for micro in range(self.start * self.cfg.grad_accum, self.cfg.steps * self.cfg.grad_accum):
            epoch, j = divmod(micro, per_epoch)
            if epoch != perm_epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch))
                perm_epoch = epoch
            batch = perm[j * self.global_batch:(j + 1) * self.global_batch]
            yield batch[self.rank * self.cfg.batch_size:(self.rank + 1) * self.cfg.batch_size].tolist()

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.grad_accum


# --- checkpoints ----------------------------------------------------------------------------------


def save_checkpoint(out_dir: Path, step: int, model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor,
                    optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig,
                    official_layout: bool = True) -> Path:
    """checkpoints/step-NNNNNNN/: the official model layout plus trainer_state.pt, written
    under a temporary name and renamed; then only the newest `keep_last` are kept."""
    target = out_dir / "checkpoints" / f"step-{step:07d}"
    with atomic_directory(target, force=True) as tmp:
        write_model_dir(tmp, model, tokenizer, processor, official_layout)
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": torch.get_rng_state(), "python_rng": random.getstate(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "config": dataclasses.asdict(cfg)}
        torch.save(state, tmp / STATE_FILE)
    for old in sorted((out_dir / "checkpoints").glob("step-*"))[:-cfg.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def write_model_dir(directory: Path, model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor,
                    official_layout: bool = True) -> None:
    """Everything a checkpoint directory needs to caption: weights, config, tokenizer, processor.
    A changed model (docs/extending.md) has no place in the official layout: it is written in the
    variant layout (checkpoints/variant.py), naming the builder the model was built or loaded with."""
    if official_layout:
        write_model_files(model, directory)
    else:
        write_variant_files(model, directory, builder_of(model))
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob("step-*"))
    return found[-1] if found else None


# --- the run ----------------------------------------------------------------------------------


def build(cfg: TrainConfig, builder: str | None = None) -> tuple[GIT, GitTokenizer, ImageProcessor]:
    """The model to train, its tokenizer and processor: from `init` (a variant keeps its own
    builder), or fresh from a preset, built by `builder` when given."""
    if cfg.init and builder is not None:
        raise ValueError(f"train got builder={builder} and init={cfg.init}; a builder builds a new model from "
                         "cfg.model, a checkpoint to fine-tune brings its own (a variant its builder), pass one")
    if cfg.init:
        model = GIT.from_pretrained(cfg.init)
        tokenizer = GitTokenizer.from_pretrained(cfg.tokenizer or cfg.init)
        return model, tokenizer, ImageProcessor.from_pretrained(cfg.init, image_size=model.cfg.vision.image_size)
    if not cfg.tokenizer:
        raise ValueError("training from scratch needs --tokenizer DIR (a directory with tokenizer.json)")
    tokenizer = GitTokenizer.from_pretrained(cfg.tokenizer)
    preset = GitConfig.load(cfg.model) if cfg.model.endswith(".json") else GitConfig.from_name(cfg.model)
    model_cfg = preset.replace(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id,
                               bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    image_size = model_cfg.vision.image_size
    model = GIT.from_config(model_cfg) if builder is None else build_variant(builder, model_cfg)
    return model, tokenizer, ImageProcessor(size=image_size, crop_size=image_size)


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(cfg: TrainConfig, *, model: GIT | None = None, tokenizer: GitTokenizer | None = None,
          processor: ImageProcessor | None = None, progress: bool = False,
          official_layout: bool = True, builder: str | None = None,
          allow_changes: bool = False) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. A given model/tokenizer/processor replaces `build`.
    A changed model (docs/extending.md) trains with `builder="package.module:function"`, the
    function that rebuilds it from its GitConfig (it builds the model too when none is given):
    checkpoints are then in the variant layout (checkpoints/variant.py), which `resume`,
    `git_scratch.load` and the CLI read. A model loaded from a variant trains that way by itself.
    `official_layout=False` without a builder writes the variant layout naming none: a resumed
    run loads its weights into the model given again, and nothing else can load it.
    A resume whose settings change the trajectory is refused unless `allow_changes` (check_resume).
    Ctrl-C saves the last finished step and logs the command that resumes it."""
    summary_writer = require_tensorboard() if cfg.tensorboard else None  # a missing package fails before any work
    device = torch.device(cfg.device)
    precision = resolve_precision(cfg.precision, device)  # "fp32" or "bf16"; bf16 where it cannot run fails now
    rank, world = init_distributed(cfg.device)
    out_dir = Path(cfg.out_dir)
    resume_from = latest_checkpoint(out_dir) if cfg.resume else None
    state = None if resume_from is None else torch.load(resume_from / STATE_FILE, map_location="cpu",
                                                        weights_only=False)
    if state is not None:
        check_resume(resume_from, state.get("config", {}), dataclasses.asdict(cfg), allow_changes, warn=rank == 0)
    if cfg.eval_manifest:
        read_manifest(cfg.eval_manifest)  # a missing or broken file fails now, not at the first evaluation
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    # A variant checkpoint without a builder cannot rebuild its model: the model given gets its weights.
    rebuildable = resume_from is not None and not (is_variant(resume_from) and read_variant(resume_from).builder is None)
    if rebuildable:
        model = GIT.from_pretrained(resume_from)  # official, or a variant rebuilt by its builder
        tokenizer = GitTokenizer.from_pretrained(resume_from)
        processor = ImageProcessor.from_pretrained(resume_from)
    elif model is None or tokenizer is None or processor is None:
        model, tokenizer, processor = build(cfg, builder)
    if builder is not None and builder_of(model) != builder:
        check_builder(model, builder)  # now, not at the first load of a checkpoint
        set_builder(model, builder)
    official_layout = official_layout and builder_of(model) is None
    if official_layout:
        check_official_layout(model)  # now, not after training, at the first save
    elif resume_from is not None and not rebuildable:
        load_variant_weights(model, resume_from)
    elif builder_of(model) is None:
        log.warning("training a changed model with no builder: its checkpoints resume only with the model "
                    "given again; pass builder='package.module:function' to make them loadable")
    accel.optimize(model.to(device).train())  # the fast kernels train too; state_dict is unchanged
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    dataset = ManifestDataset(read_manifest(cfg.train_manifest), processor, tokenizer,
                              num_frames=model.cfg.n_frames, preload=cfg.preload, pack=cfg.pack,
                              max_text_len=cfg.max_text_len)
    if rank == 0:
        warn_unknown_tokens(dataset.examples, tokenizer)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=cfg.betas,
                                  fused=device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    start = 0
    if state is not None:
        resume_optimizer(optimizer, scheduler, state, resume_from)
        start = state["step"]
        set_rng_states((state["rng"], state["python_rng"], state["cuda_rng"]))
        if rank == 0:
            log.warning("resuming from %s at step %d", resume_from, start)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loader = DataLoader(dataset, batch_sampler=StepBatches(len(dataset), cfg, rank, world, start),
                        collate_fn=lambda items: collate(items, tokenizer.pad_id), num_workers=cfg.num_workers,
                        # its own generator: drawing worker seeds must not move the global RNG,
                        # or dropout after a resume would differ from the uninterrupted run
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    metrics_path = out_dir / "metrics.jsonl"
    history = _read_history(metrics_path, start) if rank == 0 else []
    bar = _progress(cfg.steps, start, progress and rank == 0)
    board = (summary_writer(str(out_dir / "tensorboard"), purge_step=start + 1 if start else None)
             if summary_writer is not None and rank == 0 else None)
    t0, tokens_seen, last, evaluation, eval_seconds = time.perf_counter(), 0, {}, {}, 0.0
    done, rng, saved = start, rng_states(), start  # steps finished, the RNGs after them, the newest saved
    try:
        for step in range(start, cfg.steps):
            micro = [b for b in (next(batches) for _ in range(cfg.grad_accum)) if b is not None]
            n_tokens = torch.tensor(float(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)),
                                    device=device)
            if world > 1:
                dist.all_reduce(n_tokens)
            loss_sum = torch.zeros((), device=device)
            for i, batch in enumerate(micro):
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = net.no_sync() if world > 1 and i < len(micro) - 1 else nullcontext()
                with sync, autocast(precision, device):
                    logits = net(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                 segment_ids=batch.get("segment_ids"))  # (B, S, V), bf16 under autocast
                step_loss = token_loss(logits[:, :-1].float().flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                       cfg.loss, cfg.label_smoothing, ignore_index=IGNORE)
                # DDP averages gradients over ranks; * world turns that average into the global sum.
                (step_loss * world / n_tokens.clamp(min=1)).backward()
                loss_sum += step_loss.detach()
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm) if cfg.clip_norm > 0
                         else torch.zeros(()))
            with ctrl_c_held():
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                done, rng = step + 1, rng_states()
            if world > 1:
                dist.all_reduce(loss_sum)
            tokens_seen += int(n_tokens)
            last = {"step": step + 1, "loss": loss_sum.item() / max(n_tokens.item(), 1.0),
                    "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "tokens_per_s": tokens_seen / (time.perf_counter() - t0 - eval_seconds)}
            if rank == 0:
                evaluating = bool(cfg.eval_manifest) and (
                    step + 1 == cfg.steps or (cfg.eval_every > 0 and (step + 1) % cfg.eval_every == 0))
                if evaluating:
                    eval_start = time.perf_counter()
                    evaluation = evaluate_held_out(model, tokenizer, processor, cfg.eval_manifest)
                    eval_seconds += time.perf_counter() - eval_start
                    log.info("step %d: %s", step + 1, ", ".join(f"{k} {v:.4g}" for k, v in evaluation.items()))
                history.append({**last, **evaluation} if evaluating else last)
                if board is not None:
                    write_scalars(board, history[-1])
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
                bar.update()
                saving = cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps
                if saving or evaluating or (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                    _write_history(metrics_path, history)  # a checkpoint never outruns its metrics
                    if board is not None:
                        board.flush()
                if saving:
                    save_checkpoint(out_dir, step + 1, model, tokenizer, processor, optimizer, scheduler, cfg,
                                    official_layout)
                    saved = step + 1
    except KeyboardInterrupt:
        bar.close()
        if rank == 0 and done > saved:
            set_rng_states(rng)  # as they were after step `done`: the interrupted step's draws are not kept
            _write_history(metrics_path, history)
            save_checkpoint(out_dir, done, model, tokenizer, processor, optimizer, scheduler, cfg, official_layout)
        if rank == 0 and done == 0:
            log.warning("interrupted before the first step finished; nothing was saved")
        elif rank == 0:
            rebuilt = official_layout or builder_of(model) is not None  # else only the model given can resume
            again = (resume_command(dataclasses.asdict(cfg), dataclasses.asdict(TrainConfig()), world) if rebuilt
                     else "train() with resume=True and the same model")
            log.warning("interrupted: step %d is saved in %s; continue with: %s", done,
                        out_dir / "checkpoints" / f"step-{done:07d}", again)
        raise
    finally:
        bar.close()
        if board is not None:
            board.close()
    if rank == 0 and start < cfg.steps:
        save_checkpoint(out_dir, cfg.steps, model, tokenizer, processor, optimizer, scheduler, cfg, official_layout)
        with atomic_directory(out_dir / "model", force=True) as tmp:
            write_model_dir(tmp, model, tokenizer, processor, official_layout)
        plot_loss(history, out_dir / "loss.png")
    if world > 1:
        dist.barrier()
    model.eval()
    return {"steps": cfg.steps, "final_loss": last.get("loss"), "seconds": time.perf_counter() - t0,
            "model_dir": str(out_dir / "model"), "model": model, "tokenizer": tokenizer, "processor": processor,
            "eval": evaluation, "precision": precision}


def _progress(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def _read_history(path: Path, start: int) -> list[dict[str, Any]]:
    """Metrics logged before `start` (a resumed run drops what came after its checkpoint)."""
    if start == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= start]


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """The training loss per step, raw and smoothed, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="C0", linewidth=1.6, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="cross-entropy per token", yscale="log", title="training loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
