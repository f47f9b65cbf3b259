"""Where each generated token looks in the image: GIT's text -> image attention, per decoder
layer or rolled out across layers, as maps over the ViT's patch grid.

    1. generate   the fast path (SDPA, KV cache) chooses the tokens
    2. capture    one forward pass over [image ; prompt + generated tokens] with every
                  `Attention.weights` set to a list: the same mask (model/mask.py) and the same math,
                  written out so the probabilities can be kept (model/decoder.py)
    3. select     for each generated token, the query row that chose it: the position just
                  before it, whose output went through the LM head (the token's own row looks
                  at the image when choosing the *next* token)
    4. reduce     mean over heads (or one head); the image columns without CLS, reshaped to the
                  grid (a video: one frame's columns, each frame has its own CLS)

The forward pass of step 2 equals the cached generation of step 1 (tests/generation/test_generate.py
checks cache equivalence; tests/tools/test_attention.py checks capture changes nothing).

Letters: L layers, H heads, N image tokens (CLS + grid_h * grid_w), T text tokens,
S = N + T, K generated tokens, R rows of the picture (layers, or 1 for rollout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..model.git import GIT


@dataclass(frozen=True)
class TokenAttention:
    tokens: list[int]  # K generated ids, through the first EOS
    maps: torch.Tensor  # (R, K, grid_h, grid_w): head-averaged (or one head's) attention on each patch
    image_share: torch.Tensor  # (R, K): attention mass on the patches (CLS excluded), in [0, 1]
    rows: list[str]  # what each row is: "layer 3", "layer 3, head 2" or "rollout"


@contextmanager
def capturing(model: GIT) -> Iterator[list[list[torch.Tensor]]]:
    """Every decoder layer's attention probabilities, (B, H, S, L) per call, while inside."""
    sinks: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    for block, sink in zip(model.blocks, sinks):
        block.attn.weights = sink
    try:
        yield sinks
    finally:
        for block in model.blocks:
            block.attn.weights = None


def rollout(attn: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020) through GIT's decoder. attn (L, S, S):
    head-averaged probabilities of each layer, zero wherever the mask blocks. Returns (S, S):
    row q says how much of token q's last-layer state traces back to each decoder input.

    Each layer mixes tokens by its attention A and keeps them by its residual connection, so it
    is counted as A' = (A + I) / 2 (rows still sum to 1); layers compose by matrix product,
    R = A'_L ... A'_1. The LayerNorms act on each token alone and mix nothing. GIT's mask is
    kept by construction: A' is zero where the mask blocks, and products of such matrices stay
    zero there (image rows never reach text columns). So an image token's row mixes only image
    tokens, and a text row reaches the image both directly and through earlier text tokens that
    looked at it; both paths are in R. The rollout stops at the decoder input: each image token
    there is the ViT's output for its patch, already mixed with the others by the ViT."""
    eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
    result = eye
    for a in attn:
        result = ((a + eye) / 2) @ result
    return result


@dataclass(frozen=True)
class Captured:
    """One capture pass, kept to the rows that chose the generated tokens: everything a map of
    any layer, head or the rollout needs, small enough to cache (K rows, not S)."""

    heads: torch.Tensor  # (L, H, K, S): each layer's and head's probabilities on every key
    mean: torch.Tensor  # (L, K, S): the same averaged over heads
    rollout: torch.Tensor  # (K, S): the rollout of the head-averaged layers
    n_image: int  # N: image tokens before the text, every frame's CLS + grid
    frames: int  # F: 1 for an image
    grid: tuple[int, int]  # (grid_h, grid_w) of each frame


def capture(model: GIT, pixel_values: torch.Tensor, text: torch.Tensor, n_prompt: int) -> Captured:
    """pixel_values (1, 3, H, W) or (1, F, 3, H, W), text (1, T) = the prompt's n_prompt ids and
    then the K generated ones: one forward pass with every layer's probabilities kept."""
    with capturing(model) as sinks, torch.no_grad():
        model(pixel_values, text)
    attn = torch.stack([sink[0][0] for sink in sinks]).float()  # (L, H, S, S): batch row 0
    mean = attn.mean(1)  # (L, S, S)
    n_image = attn.shape[-1] - text.shape[1]
    queries = n_image + n_prompt - 1 + torch.arange(text.shape[1] - n_prompt)  # the row that chose each token
    frames = pixel_values.shape[1] if pixel_values.dim() == 5 else 1
    patch = model.cfg.vision.patch_size
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    return Captured(attn[:, :, queries], mean[:, queries], rollout(mean)[queries], n_image, frames, grid)


def patch_maps(chosen: torch.Tensor, captured: Captured, frame: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """chosen (R, K, S): rows of `captured` -> maps (R, K, grid_h, grid_w) on frame `frame`'s patches
    and their sum (R, K). Each frame's tokens are its CLS, then its grid (model/vision.py)."""
    per_frame = captured.n_image // captured.frames
    start = frame * per_frame + 1  # CLS first
    on_patches = chosen[..., start:start + per_frame - 1]  # (R, K, grid_h * grid_w)
    return on_patches.reshape(*chosen.shape[:2], *captured.grid), on_patches.sum(-1)


def attention_maps(model: GIT, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, *, max_new_tokens: int = 20,
                   layers: list[int] | None = None, use_rollout: bool = False, head: int | None = None,
                   frame: int = 0) -> TokenAttention:
    """pixel_values (1, 3, H, W) or a video's (1, F, 3, H, W), prompt_ids (1, T0). `layers`
    (default: the last) gives one row each; `use_rollout` one row for all layers together.
    `head` one head's maps instead of the mean over heads (not with the rollout, which is of
    the mean); `frame` which frame of a video the maps are on."""
    cfg = model.cfg
    if head is not None and (use_rollout or not 0 <= head < cfg.n_head):
        raise ValueError(f"head {head}: the rollout is of the mean over heads, and the model has heads 0 to "
                         f"{cfg.n_head - 1}; pass one of them with a layer, or no head")
    ids = model.generate(pixel_values, prompt_ids, max_new_tokens=max_new_tokens)  # (1, T0 + new)
    n_prompt = prompt_ids.shape[1]
    new = ids[0, n_prompt:].tolist()
    if cfg.eos_id in new:
        new = new[: new.index(cfg.eos_id) + 1]
    captured = capture(model, pixel_values, ids[:, : n_prompt + len(new)], n_prompt)
    if use_rollout:
        chosen, rows = captured.rollout[None], ["rollout"]
    else:
        layers = [cfg.n_layer - 1] if layers is None else layers
        chosen = captured.mean[layers] if head is None else captured.heads[layers, head]
        rows = [f"layer {i}" if head is None else f"layer {i}, head {head}" for i in layers]
    maps, image_share = patch_maps(chosen, captured, frame)
    return TokenAttention(new, maps, image_share, rows)
