"""Training precision: fp32, or bf16 autocast over fp32 master weights, on CPU as on CUDA.

Under "bf16" the step's forward runs inside `torch.autocast(device, torch.bfloat16)`: the ops
autocast lists (linear, matmul, convolution, attention) compute in bfloat16, everything else
stays fp32. The parameters, their gradients and AdamW's moments stay fp32, the loss is computed
in fp32 from the logits (loop.py), and checkpoints hold the fp32 weights: a checkpoint does not
know the precision it was trained in, and a run may resume in another one (resume.py).
"auto" is what training did before this setting: bf16 on CUDA, fp32 on every other device.

On CPU, SDPA's fused kernel in bfloat16 is slow in backward: for the demo's decoder attention
(32 x 4 heads x 138 tokens, head size 32, a mask) it took 71 ms against 16 ms in fp32, and for
the ViT's 19.5 against 6.7 ms, so bf16 with it made the whole step slower than fp32 (0.84x,
docs/training.md). There attention goes through SDPA's math kernel, which computes a bfloat16
attention with fp32 products and softmax (torch's default for it): 20 ms for the same backward.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"training config field precision = {precision!r} is not one of {', '.join(PRECISIONS)}; "
                         "fix it in the config file or flag")


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16", what `precision` means on `device`; bf16 where it cannot run is an error."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(f"training config: precision 'bf16' on device {device}, which has no bfloat16 autocast "
                         "(a CUDA GPU older than Ampere, or a device torch cannot autocast); use --precision fp32")
    return precision


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on `device`. Every CPU does; without AVX512_BF16 or AMX its bf16
    products are emulated, and likely slower than fp32 (not measured here)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.amp.is_autocast_available(device.type)


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context a training step's forward runs in, for a resolved `precision`."""
    if precision == "fp32":
        return nullcontext()
    stack = ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    if device.type == "cpu":
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))  # see the module's docstring
    return stack
