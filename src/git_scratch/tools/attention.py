"""Where each generated token looks in the image: GIT's text -> image attention, per decoder
layer or rolled out across layers, as maps over the ViT's patch grid.

    1. generate   the fast path (SDPA, KV cache) chooses the tokens
    2. capture    one forward pass over [image ; prompt + generated tokens] with every
                  `Attention.weights` set to a list: the same mask (model/mask.py) and the same math,
                  written out so the probabilities can be kept (model/decoder.py)
    3. select     for each generated token, the query row that chose it: the position just
                  before it, whose output went through the LM head (the token's own row looks
                  at the image when choosing the *next* token)
    4. reduce     mean over heads; the image columns without CLS, reshaped to the grid

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
    maps: torch.Tensor  # (R, K, grid_h, grid_w): head-averaged attention on each patch
    image_share: torch.Tensor  # (R, K): attention mass on the patches (CLS excluded), in [0, 1]
    rows: list[str]  # what each row is: "layer 3", or "rollout"


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


def attention_maps(model: GIT, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, *, max_new_tokens: int = 20,
                   layers: list[int] | None = None, use_rollout: bool = False) -> TokenAttention:
    """pixel_values (1, 3, H, W), prompt_ids (1, T0). `layers` (default: the last) gives one row
    each; `use_rollout` one row for all layers together."""
    cfg = model.cfg
    ids = model.generate(pixel_values, prompt_ids, max_new_tokens=max_new_tokens)  # (1, T0 + new)
    n_prompt = prompt_ids.shape[1]
    new = ids[0, n_prompt:].tolist()
    if cfg.eos_id in new:
        new = new[: new.index(cfg.eos_id) + 1]
    text = ids[:, : n_prompt + len(new)]  # (1, T)
    with capturing(model) as sinks, torch.no_grad():
        model(pixel_values, text)
    attn = torch.stack([sink[0][0] for sink in sinks]).float().mean(1)  # (L, S, S): batch row 0, heads averaged
    n_image = attn.shape[-1] - text.shape[1]
    queries = n_image + n_prompt - 1 + torch.arange(len(new))  # the row that chose each token
    if use_rollout:
        chosen, rows = rollout(attn)[None], ["rollout"]
    else:
        layers = [cfg.n_layer - 1] if layers is None else layers
        chosen, rows = attn[layers], [f"layer {i}" for i in layers]
    on_patches = chosen[:, queries, 1:n_image]  # (R, K, N - 1): CLS is column 0
    grid_h, grid_w = (side // cfg.vision.patch_size for side in pixel_values.shape[-2:])
    maps = on_patches.reshape(len(rows), len(new), grid_h, grid_w)
    return TokenAttention(new, maps, on_patches.sum(-1), rows)
