"""The token losses training can use: transformers' cross-entropy, or the original's smoothed KL.

`cross_entropy` is what transformers' GitForCausalLM computes (with `label_smoothing` as torch's:
eps / V on every class, the target's included, and the loss reported as a cross-entropy).

`original_smooth` is microsoft/GenerativeImage2Text's SmoothLabelCrossEntropyLoss (layers/decoder.py,
the loss_type='smooth' that model.py's get_git_model sets), with its eps 0.1: the target
gets 1 - eps, each of the V - 1 other classes eps / (V - 1), and the loss is the KL divergence
from that distribution q to the model's p, sum_c q_c (log q_c - log p_c). It equals the
cross-entropy against q minus q's entropy, a constant: the gradient is the cross-entropy's, and
the value is 1.36 lower than that cross-entropy at V = 30522. Against torch's label smoothing with
the same eps the gradients differ by the factor V / (V - 1) on the smoothed part.

Both return the SUM over the tokens whose label is not `ignore_index` (the loop divides by the
token count of the whole step; the original's mean over tokens is that sum / count).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSSES = ("cross_entropy", "original_smooth")
ORIGINAL_EPS = 0.1  # SmoothLabelCrossEntropyLoss's default, which the original trains with


def token_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str = "cross_entropy",
               label_smoothing: float = 0.0, ignore_index: int = -100) -> torch.Tensor:
    """Summed loss of logits (N, V) against labels (N,), computed in fp32."""
    if loss == "original_smooth":
        return original_smooth_loss(logits, labels, ORIGINAL_EPS, ignore_index)
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum",
                           label_smoothing=label_smoothing)


def original_smooth_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = ORIGINAL_EPS,
                         ignore_index: int = -100) -> torch.Tensor:
    """sum over kept tokens of KL(q || softmax(logits)), q = 1 - eps on the label, eps / (V - 1) elsewhere."""
    keep = labels != ignore_index
    log_p = logits[keep].float().log_softmax(-1)  # (n, V)
    target = labels[keep]  # (n,)
    on, off = 1.0 - eps, eps / (log_p.shape[-1] - 1)
    # cross-entropy against q, written as off * (sum of all log p) + (on - off) * (log p of the label)
    cross = -(off * log_p.sum(-1) + (on - off) * log_p.gather(1, target[:, None]).squeeze(1))  # (n,)
    entropy = -(on * math.log(on) + (log_p.shape[-1] - 1) * off * math.log(off)) if eps > 0 else 0.0
    return (cross - entropy).sum()
