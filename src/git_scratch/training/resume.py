"""Resuming and interrupting a run: which setting changes a resume may make, the saved optimizer
state under this run's settings, the command line that continues a run, and a Ctrl-C that
never lands in the middle of a weight update.

Settings travel as dicts (`dataclasses.asdict` of a TrainConfig, as trainer_state.pt saves
them), so this module needs nothing from the loop that uses it.
"""

from __future__ import annotations

import logging
import random
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Fields a resumed run may change freely: where the run lives and runs (another machine may
# round differently, it trains the same thing), how it rounds (precision: the checkpoint holds
# fp32 weights either way, and "auto" already changes with the device), how its data loads (the
# batches are a function of (seed, step)), same gradients (grad_checkpointing), and how often it
# logs, saves and evaluates (evaluation leaves the trajectory alone). Every other field changes
# what is trained.
FREE_ON_RESUME = frozenset({"out_dir", "device", "precision", "num_workers", "preload", "grad_checkpointing",
                            "log_every", "save_every", "keep_last", "resume", "eval_manifest", "eval_every",
                            "tensorboard"})
# A resumed run continues the checkpoint's model, whatever these say; they choose how a new run starts.
START_ONLY = frozenset({"init", "model", "tokenizer"})


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field old -> new' for each field outside FREE_ON_RESUME whose value differs (a field the
    saved settings lack, from an older version, is not compared)."""
    changes = []
    for name, new in current.items():
        if name in FREE_ON_RESUME or name not in saved:
            continue
        old = saved[name]
        if (tuple(old) if isinstance(new, tuple) else old) != new:
            changes.append(f"{name} {old!r} -> {new!r}")
    return changes


def check_resume(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any], allow_changes: bool,
                 warn: bool) -> None:
    """Refuse to resume with settings that change the trajectory, unless allowed; then warn of each."""
    changes = changed_settings(saved, current)
    if changes and not allow_changes:
        raise ValueError(f"{checkpoint} was trained with other settings ({', '.join(changes)}); pass the saved "
                         "values, or --allow-changes (train(..., allow_changes=True)) to train on with the new ones")
    for change in changes if warn else []:
        note = "; no effect: a resumed run continues the checkpoint's model" if change.split()[0] in START_ONLY else ""
        log.warning("resuming with a changed setting: %s%s", change, note)


def resume_optimizer(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                     state: dict[str, Any], checkpoint: Path) -> None:
    """Load the saved moments, step counts and schedule position, keeping this run's settings.

    load_state_dict puts back every group's saved lr, betas and weight decay, and the schedule's
    saved base rates, while the schedule's shape (warmup, steps) is this run's, in its lambda.
    Left so, a run resumed with a new lr trains at the old lr times the new schedule: neither."""
    settings = [{"initial_lr": g["initial_lr"], "weight_decay": g["weight_decay"], "betas": g["betas"]}
                for g in optimizer.param_groups]
    base_lrs = list(scheduler.base_lrs)
    saved_sizes = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if saved_sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(f"{checkpoint}: its optimizer state holds other parameter groups than this run trains "
                         "(vision_lr 0 freezes the image encoder); keep the saved vision_lr, or start a new run "
                         "from the checkpoint with --init")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scheduler.base_lrs = base_lrs
    for group, setting, base_lr, factor in zip(optimizer.param_groups, settings, base_lrs, scheduler.lr_lambdas):
        # the rate LambdaLR sets at this step, the same product: an unchanged resume stays exact
        group.update(setting, lr=base_lr * factor(scheduler.last_epoch))


def resume_command(settings: dict[str, Any], defaults: dict[str, Any], world: int) -> str:
    """The command line that continues a run: each setting not at its default, then --resume."""
    words = (["torchrun", f"--nproc-per-node={world}", "-m", "git_scratch.cli", "train"] if world > 1
             else ["git-scratch", "train"])
    for name, value in settings.items():
        if name == "resume" or value == defaults[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        else:
            words += [flag, *map(str, value if isinstance(value, tuple) else [value])]
    return shlex.join([*words, "--resume"])


# --- Ctrl-C ---------------------------------------------------------------------------------------


def rng_states() -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
    """Every global RNG a training step draws from (dropout, Python's random)."""
    return (torch.get_rng_state(), random.getstate(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_states(states: tuple[torch.Tensor, Any, list[torch.Tensor]]) -> None:
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    if states[2]:
        torch.cuda.set_rng_state_all(states[2])


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C until the block ends. Inside optimizer.step it would leave some tensors
    updated and others not, and the checkpoint saved on Ctrl-C would keep them so. Only
    Python's own handler in the main thread is replaced (the only place Ctrl-C lands)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt
