"""Watching a run without changing it: the tokenizer's coverage of the targets before the first
step, held-out metrics during training, and TensorBoard scalars (the `tensorboard` extra)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..data.manifest import Example
from ..data.processor import ImageProcessor
from ..data.tokenizer import GitTokenizer
from ..model.git import GIT
from .evaluate import evaluate
from .resume import rng_states, set_rng_states

log = logging.getLogger(__name__)
UNKNOWN_SHARE = 0.25  # more [UNK] than this among the target tokens, and training is warned about


def warn_unknown_tokens(examples: Sequence[Example], tokenizer: GitTokenizer, sample: int = 2000) -> None:
    """Warn when many target tokens are the tokenizer's unknown token: with a vocabulary that
    lacks the data's words (another checkpoint's, a word-level one) the model learns to write
    [UNK]. A small manifest is read whole, a large one at `sample` evenly spaced examples."""
    n_tokens, unknown = 0, Counter()
    for ex in examples[::max(1, len(examples) // sample)]:
        encoding = tokenizer.backend.encode(ex.target, add_special_tokens=False)
        n_tokens += len(encoding.ids)
        unknown.update(ex.target[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets) if i == tokenizer.unk_id)
    n_unknown = sum(unknown.values())
    if n_unknown > UNKNOWN_SHARE * n_tokens:
        words = ", ".join(repr(word) for word, _ in unknown.most_common(5))
        log.warning("%d of %d target tokens (%.0f%%) are the tokenizer's unknown token %s, e.g. for %s; "
                    "train with the checkpoint's own tokenizer, or with one whose vocabulary covers these words",
                    n_unknown, n_tokens, 100 * n_unknown / n_tokens, tokenizer.special_tokens["unk_token"], words)


def evaluate_held_out(model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, manifest: str) -> dict[str, Any]:
    """The manifest's metrics, keys prefixed "eval/". Generation runs in eval mode (no dropout)
    and the global RNGs are put back after it, so training goes on as it would without."""
    states = rng_states()
    model.eval()
    try:
        metrics = evaluate(model, tokenizer, processor, manifest)
    finally:
        model.train()
        set_rng_states(states)
    return {f"eval/{name}": value for name, value in metrics.items()}


def require_tensorboard() -> type:
    """torch's SummaryWriter, or a one-line error naming the extra that installs it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard = true needs the tensorboard package, which is not installed; "
                         "pip install 'git_scratch[tensorboard]'") from None
    return SummaryWriter


def write_scalars(board: Any, row: dict[str, Any]) -> None:
    """One metrics.jsonl row as TensorBoard scalars, under the same names."""
    for name, value in row.items():
        if name != "step":
            board.add_scalar(name, value, row["step"])
