"""Which CPU kernel multiplies by a weight in inference: torch's default (MKL) or oneDNN.

`nn.Linear` on CPU runs MKL's fp32 GEMM. torch also ships oneDNN, and on the CPUs measured
here oneDNN was as fast or faster where it is used below (docs/performance.md):

- few rows (a decode step: one row per beam, image or question), on every CPU measured: a
  git-base decode step with 3 rows took 68 ms with MKL and 50 ms with oneDNN on an AVX2 host,
  and no size up to 64 rows was slower;
- every size on a CPU with AVX-512. There oneDNN runs AVX-512 code and MKL, on the AMD host
  measured, ran at the same rate as oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2): 2.1-2.7x
  slower for the vision tower's 197-row products, slower at every size from 1 to 4096 rows.
  On the AVX2 host, oneDNN was ~10% slower than MKL for 197 rows, so there it stops at 64.

The two differ in float rounding only (tests/test_linear.py; tests/parity at 1e-5). Training
(autograd on), other dtypes and devices, and hooked layers or ones with their own forward keep
`nn.Linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's fp32 linear; None where torch was built without oneDNN (mkldnn).
ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
FEW_ROWS = 64  # oneDNN measured as fast as MKL or faster up to here on every CPU
AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")  # then at every size


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, through oneDNN where that was measured faster (module docstring)."""
    # nn.Linear's own forward (nn.MultiheadAttention's out_proj is a subclass that keeps it) and
    # no hooks: hooks (parity recording) must see the call, and an override (LoRA) its own math.
    plain = type(layer).forward is nn.Linear.forward and not (layer._forward_hooks or layer._forward_pre_hooks)
    if plain:
        return linear_weights(x, layer.weight, layer.bias)
    return layer(x)


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., K), weight (N, K) -> (..., N), kernel chosen as above."""
    if use_onednn(x, weight):
        return ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The cases measured: fp32 on CPU, no autograd, a contiguous weight, and few rows or AVX-512."""
    if ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled or torch.is_grad_enabled():
        return False
    fp32_cpu = x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
    rows_ok = AVX512 or x.numel() <= FEW_ROWS * x.shape[-1]
    return fp32_cpu and rows_ok and weight.is_contiguous()
