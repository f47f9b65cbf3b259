"""The two graphs an export holds, as plain functions of tensors over a built GIT.

GIT's image rows never see text (model/mask.py), so decoding splits into two graphs:

    image graph      pixel_values (B, 3, H, W) or (B, F, 3, H, W)
                     -> keys.i, values.i (B, H, N, Dh) for every layer i: generation/prefix.py's ImagePrefix
    text-step graph  input_ids (R, S), positions (R, S), mask (R, 1, S, P + S),
                     past_keys.i, past_values.i (R, H, P, Dh)
                     -> logits (R, S, V), present_keys.i, present_values.i (R, H, P + S, Dh)

The text-step graph runs the prefill (P = N image tokens, S = prompt) and each one-token step
(S = 1) alike; the cache grows by concatenation, so nothing in it is preallocated or
position-dependent, and a caller in any language feeds the present tensors back as the next past.

The modules run the model's own blocks (`block(x, mask, cache, ...)`), so the graphs hold exactly
what PyTorch runs; `check_exportable` refuses a model whose parts are not GIT's own, because a
changed block or mask could compute something these two signatures cannot carry.

Letters: B images, F frames, R decoding rows, S tokens in one call, P past keys, N image tokens,
H heads, Dh head width, V vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.decoder import MLP, Attention, DecoderBlock, TextEmbedding
from ..model.git import GIT
from ..model.vision import ImageEncoder

# attribute path -> the class an exportable model has there (subclasses change behaviour: refused)
EXPECTED_PARTS: dict[str, type[nn.Module]] = {
    "vision": ImageEncoder, "embed": TextEmbedding, "final_norm": nn.Identity,
}
BLOCK_PARTS: dict[str, type[nn.Module]] = {"": DecoderBlock, "attn": Attention, "mlp": MLP}


def check_exportable(model: nn.Module) -> None:
    """One-line ValueError naming the first part of `model` the two graphs cannot express."""
    hint = "the ONNX export covers GIT's own architecture only (docs/export.md); run this model in PyTorch"
    if type(model) is not GIT:
        raise ValueError(f"the model is a {type(model).__name__}, not GIT; {hint}")
    for name, cls in EXPECTED_PARTS.items():
        part = getattr(model, name)
        if type(part) is not cls:
            raise ValueError(f"model.{name} is a {type(part).__name__}, not {cls.__name__}; {hint}")
    for i, block in enumerate(model.blocks):
        for name, cls in BLOCK_PARTS.items():
            part = block.get_submodule(name)
            if type(part) is not cls:
                where = f"blocks.{i}" + (f".{name}" if name else "")
                raise ValueError(f"model.{where} is a {type(part).__name__}, not {cls.__name__}; {hint}")


class ConcatCache:
    """What a block's attention calls `update` on (model/decoder.py's KVCache interface): the past
    keys and values with this call's appended, kept so the graph can return them."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.k, self.v = keys, values  # (R, H, P, Dh)

    def update(self, input_pos: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)  # (R, H, P + S, Dh)
        return self.k, self.v


class ImageGraph(nn.Module):
    """pixel_values -> (keys.0, values.0, keys.1, ...): what generation/prefix.py's encode_prefix computes."""

    def __init__(self, model: GIT) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        x = model.image_proj(model.vision(pixel_values))  # (B, N, D)
        outputs: list[torch.Tensor] = []
        # GIT's image block of the mask is all True: no mask at all, as encode_prefix runs it
        for block in model.blocks[:-1]:
            cache = ConcatCache(x.new_zeros(x.shape[0], model.cfg.n_head, 0, model.cfg.head_dim),
                                x.new_zeros(x.shape[0], model.cfg.n_head, 0, model.cfg.head_dim))
            x = block(x, None, cache)
            outputs += [cache.k, cache.v]
        # the last layer's image queries are never read by text: its keys and values alone
        outputs += list(model.blocks[-1].keys_values(x))
        return tuple(outputs)


class TextStepGraph(nn.Module):
    """(input_ids, positions, mask, past_keys.0, past_values.0, ...) -> (logits, present_keys.0, ...)."""

    def __init__(self, model: GIT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        x = model.embed(input_ids, positions)  # (R, S, D)
        outputs: list[torch.Tensor] = []
        for i, block in enumerate(model.blocks):
            cache = ConcatCache(past[2 * i], past[2 * i + 1])
            x = block(x, mask, cache)
            outputs += [cache.k, cache.v]
        logits = model.lm_head(model.final_norm(x))  # (R, S, V)
        return (logits, *outputs)
