"""oneDNN for fp32 products on CPU, and SDPA for the ViT's attention: the kernels `optimize` swaps in.

`nn.Linear` on CPU runs MKL's fp32 GEMM. torch also ships oneDNN, and which of the two is faster
depends on the CPU and on the number of rows, in ways no fixed rule covered (docs/performance.md):

- on an AMD EPYC with AVX-512, MKL ran at the rate of oneDNN held to AVX2: oneDNN was 2.1-2.7x
  faster for the vision tower's 197-row products and faster at every size from 1 to 4096 rows;
- on an AVX2 host oneDNN was faster at few rows (a git-base decode step with 3 rows: 50 against
  68 ms) and ~10% slower at 197;
- on an Intel Xeon with AMX, MKL was faster at 1-3 rows (a decode step with 3 beams: 14.5
  against 23 ms) and beyond ~1000 rows, oneDNN between.

So `optimize` measures it (`measure_kernels`): for each range of rows in `ROW_RANGES` it times
both kernels on products of the model's shapes, once per process and thread count, and each
product then takes the faster one for its row count. Until something is measured (a FastLinear made
by hand) the rule found on the first two hosts holds: oneDNN at every size with AVX-512, at up
to `FEW_ROWS` rows in inference without. Training follows the same choice (`OneDNNLinear`,
forward and backward). The kernels differ in float rounding only (tests/accel; tests/parity at
1e-5 runs both). Other dtypes and devices keep `F.linear`.

open_clip's blocks attend through `nn.MultiheadAttention`, which made git-base's tower 7% slower
in inference on CPU than one SDPA call (588 ms against 544 ms, docs/performance.md): `SDPASelfAttention`
computes the same self-attention with SDPA, and hands every other use back to the original.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# oneDNN's fp32 linear; None where torch was built without oneDNN (mkldnn).
ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
# The rule before any measurement: oneDNN at every size with AVX-512, else up to FEW_ROWS in inference.
FEW_ROWS = 64
AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
# (most rows in the range, rows timed): 1-3 rows greedy decoding or 3 beams (where MKL was
# faster on the Xeon, up to 3 rows and not from 4), up to 8 a small batch, up to 64 a batch of
# beams, up to 512 the image prefix or a prefill, beyond it a batch of images or training
ROW_RANGES = ((3, 2), (8, 6), (64, 32), (512, 197), (None, 1024))
# (thread count, input width K) -> for each of ROW_RANGES, whether oneDNN was faster
MEASURED: dict[tuple[int, int], tuple[bool, ...]] = {}
STREAMED_ROWS = 8  # up to here a pass over the products reads weights from memory more than it multiplies


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., K), weight (N, K) -> (..., N), kernel chosen as above."""
    if not use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return OneDNNLinear.apply(x, weight, bias)
    return ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 on CPU with a contiguous weight, outside CPU autocast and torch.compile, and then
    what `measure_kernels` found faster for this many rows, or the unmeasured rule."""
    if ONEDNN_LINEAR is None or not torch.backends.mkldnn.enabled:
        return False
    if not (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.is_contiguous()):
        return False
    if torch.is_autocast_enabled("cpu"):  # F.linear is where autocast casts to its dtype; oneDNN's op would stay fp32
        return False
    if torch.compiler.is_compiling():  # inductor lowers oneDNN's op only for constant weights; it picks its own
        return False
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    measured = MEASURED.get((torch.get_num_threads(), x.shape[-1]))
    if measured is not None:
        return measured[row_range(rows)]
    return AVX512 or (not torch.is_grad_enabled() and rows <= FEW_ROWS)


def row_range(rows: int) -> int:
    """The index in ROW_RANGES of the range holding `rows`."""
    return next(i for i, (most, _) in enumerate(ROW_RANGES) if most is None or rows <= most)


def measure_kernels(decoder: list[tuple[int, int]], block: list[tuple[int, int]], repeats: int = 3) -> tuple[bool, ...]:
    """Time MKL (F.linear) against oneDNN for each of ROW_RANGES and keep whether oneDNN was
    faster, for this thread count and the products' input widths: products of another width (a
    tower wider than the decoder) keep the rule. Measured once per process, thread count and
    widths, then reused; returns one flag per range.

    decoder: the (in, out) shapes of one decode step's products (every decoder layer and the LM
        head), timed up to STREAMED_ROWS rows, where a step streams the weights from memory and
        the kernels differ in how near the bandwidth they come. block: one block's shapes, timed at
        more rows, where the work is the multiplications (all of the decoder would take seconds).
    The weights are stand-ins of those shapes, filled and freed here, not the model's: reading the
    model's would bring every weight of a memory-mapped checkpoint into memory at load, even those
    a run never uses. Each side's time is the least of `repeats` passes, taken in turns, so load
    from other processes cannot make one side look faster. On git-base this took 0.6 s on 2 cores."""
    threads, widths = torch.get_num_threads(), {k for k, _ in decoder}
    if all((threads, k) in MEASURED for k in widths):
        return MEASURED[threads, min(widths)]
    faster = []
    with torch.no_grad():
        for group in (decoder, block):
            # One buffer for all (a large one goes back to the system when freed), filled with a
            # constant: the kernels' speed does not depend on the values, and it is quick.
            flat, offsets = torch.full((sum(n * k + n for k, n in group),), 0.01), [0]
            for k, n in group:
                offsets.append(offsets[-1] + n * k + n)
            layers = [(flat[o:o + n * k].view(n, k), flat[o + n * k:o + n * k + n]) for (k, n), o in zip(group, offsets)]
            for most, rows in ROW_RANGES:
                if (rows <= STREAMED_ROWS) != (group is decoder):
                    continue
                inputs = [torch.full((rows, weight.shape[1]), 0.5) for weight, _ in layers]

                def run(onednn: bool) -> float:
                    start = time.perf_counter()
                    for x, (weight, bias) in zip(inputs, layers):
                        if onednn:
                            ONEDNN_LINEAR(x, weight, bias, "none", [], "")
                        else:
                            F.linear(x, weight, bias)
                    return time.perf_counter() - start

                run(True), run(False)  # first calls: oneDNN creates its primitives
                best = {True: float("inf"), False: float("inf")}
                for _ in range(repeats if rows <= STREAMED_ROWS else 2):  # longer passes, steadier
                    for onednn in (False, True):
                        best[onednn] = min(best[onednn], run(onednn))
                faster.append(best[True] < best[False])
    for k in widths:
        MEASURED[threads, k] = tuple(faster)
    release_freed_memory()
    return tuple(faster)


def release_freed_memory() -> None:
    """Hand the measurement's freed buffers back to the system. glibc keeps freed blocks of up to
    32 MB in its heap (one block's stand-ins, the 1024-row outputs), and they stayed resident:
    110 MB on git-base, 15 MB after this. A no-op where the C library is not glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to trim
        pass


def describe_choice(width: int) -> str:
    """Which kernel each range of rows takes for products of input width `width` at this thread
    count, e.g. 'MKL at 1-8 rows, oneDNN at 9-512 rows, MKL from 513 rows (measured)'."""
    measured = MEASURED.get((torch.get_num_threads(), width))
    if measured is None:
        return "oneDNN at every size (AVX-512 rule)" if AVX512 else f"oneDNN at up to {FEW_ROWS} rows in inference (rule)"
    spans, low = [], 1
    for (most, _), onednn in zip(ROW_RANGES, measured):
        name = "oneDNN" if onednn else "MKL"
        if spans and spans[-1][0] == name:
            spans[-1][2] = most
        else:
            spans.append([name, low, most])
        low = (most or 0) + 1
    if len(spans) == 1:
        return f"{spans[0][0]} at every size (measured)"
    return ", ".join(f"{name} at {lo}-{hi} rows" if hi is not None else f"{name} from {lo} rows"
                     for name, lo, hi in spans) + " (measured)"


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
        qkv = self.project_in(query)  # (B, n, 3D)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(rearrange(y, "b h n d -> b n (h d)")), None  # (B, n, D), no weights

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        """The fused query/key/value projection, x (B, n, D) -> (B, n, 3D)."""
        return linear_weights(x, self.in_proj_weight, self.in_proj_bias)
