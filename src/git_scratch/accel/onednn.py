"""oneDNN for fp32 products on CPU, and SDPA for the ViT's attention: the kernels `optimize` swaps in.

`nn.Linear` on CPU runs MKL's fp32 GEMM. torch also ships oneDNN, and on the CPUs measured
here oneDNN was as fast or faster where it is used below (docs/performance.md):

- few rows (a decode step: one row per beam, image or question), on every CPU measured: a
  git-base decode step with 3 rows took 68 ms with MKL and 50 ms with oneDNN on an AVX2 host,
  and no size up to 64 rows was slower;
- every size on a CPU with AVX-512. There oneDNN runs AVX-512 code and MKL, on the AMD host
  measured, ran at the same rate as oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2): 2.1-2.7x
  slower for the vision tower's 197-row products, slower at every size from 1 to 4096 rows.
  On the AVX2 host, oneDNN was ~10% slower than MKL for 197 rows, so there it stops at 64.

With AVX-512 training goes through oneDNN too (`OneDNNLinear`, forward and backward); without it
training keeps MKL. The two differ in float rounding only (tests/accel; tests/parity at 1e-5).
Other dtypes and devices keep `F.linear`.

open_clip's blocks attend through `nn.MultiheadAttention`, which made git-base's tower 7% slower
in inference on CPU than one SDPA call (588 ms against 544 ms, docs/performance.md): `SDPASelfAttention`
computes the same self-attention with SDPA, and hands every other use back to the original.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# oneDNN's fp32 linear; None where torch was built without oneDNN (mkldnn).
ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
FEW_ROWS = 64  # oneDNN measured as fast as MKL or faster up to here on every CPU
AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")  # then at every size


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., K), weight (N, K) -> (..., N), kernel chosen as above."""
    if not use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return OneDNNLinear.apply(x, weight, bias)
    return ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The cases measured: fp32 on CPU with a contiguous weight, outside CPU autocast and
    torch.compile, and then AVX-512 (inference and training) or few rows in inference."""
    if ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled:
        return False
    if not (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.is_contiguous()):
        return False
    if torch.is_autocast_enabled("cpu"):  # F.linear is where autocast casts to its dtype; oneDNN's op would stay fp32
        return False
    if torch.compiler.is_compiling():  # inductor lowers oneDNN's op only for constant weights; it picks its own
        return False
    return AVX512 or (not torch.is_grad_enabled() and x.numel() <= FEW_ROWS * x.shape[-1])


class OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with oneDNN forward and backward. oneDNN's linear multiplies by a transposed
    (N, K) weight, so each gradient product is written in that form, on transposed copies:

        grad_x (M, K) = grad_y (M, N) @ W (N, K)      = linear(grad_y, W^T)
        grad_W (N, K) = grad_y^T (N, M) @ x (M, K)    = linear(grad_y^T, x^T)

    The copies cost memory traffic; the products are compute bound and still gained: a git-base
    layer's forward and backward for 8 x 217 tokens took 59-66 ms against MKL's 90-123 ms."""

    generate_vmap_rule = True  # torch.func.vmap (per-sample gradients) runs the products row by row

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return ONEDNN_LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:  # apart, for torch.func.grad
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_y2, x2 = grad_y.reshape(-1, grad_y.shape[-1]), x.reshape(-1, x.shape[-1])  # (M, N), (M, K)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = ONEDNN_LINEAR(grad_y2, weight.t().contiguous(), None, "none", [], "").view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = ONEDNN_LINEAR(grad_y2.t().contiguous(), x2.t().contiguous(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y2.sum(0)
        return grad_x, grad_w, grad_b


class FastLinear(nn.Linear):
    """nn.Linear whose product goes through `linear_weights`. `optimize` gives plain nn.Linear
    layers this class in place (parameters, hooks and identity kept); `restore` takes it back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_weights(x, self.weight, self.bias)


class SDPASelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose self-attention without mask or weights (what open_clip's ViT
    blocks ask for) is one fused in_proj product, SDPA and out_proj; any other call is the original's."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                **kwargs: Any) -> tuple[torch.Tensor, None]:
        plain = not args and kwargs.get("attn_mask") is None and kwargs.get("key_padding_mask") is None \
            and not kwargs.get("need_weights", True) and not kwargs.get("is_causal", False)
        if not (plain and query is key is value and self.batch_first and self.in_proj_weight is not None
                and query.ndim == 3):
            return super().forward(query, key, value, *args, **kwargs)
        qkv = linear_weights(query, self.in_proj_weight, self.in_proj_bias)  # (B, n, 3D)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(rearrange(y, "b h n d -> b n (h d)")), None  # (B, n, D), no weights
