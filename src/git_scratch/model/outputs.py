"""What GIT.forward returns when asked for more than logits: every layer's hidden states and
attention probabilities, of the decoder and of the ViT, as transformers' GitForCausalLM and its
image encoder give them with output_hidden_states / output_attentions (tests/parity/test_outputs_parity.py).

They are recorded from outside the fast path. `recording` hangs temporary forward hooks on the
blocks and lists in the decoder's `Attention.weights`; GIT.forward runs its plain path inside
and everything is taken off on the way out. Nothing the pass computes changes, so the logits are
bit-identical to a call without the flags, with accel's kernels or without (tests/model/test_outputs.py),
and a variant's own blocks or mask are recorded as they run.

Letters: B batch, F frames, N image tokens (all frames), T text tokens, D decoder width, H heads,
n tokens per frame, D_vis and H_vis the ViT's width and heads, B_img the images given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .decoder import attention_probabilities
from .vision import ImageEncoder


@dataclass(frozen=True)
class GitOutput:
    """`GIT.forward(..., output_hidden_states=True, output_attentions=True)`. A field not asked for is
    None; so are the vision fields of a text-only call (pixel_values None) and of a tower that is not
    git_scratch's ViT (`ImageEncoder`), whose blocks are unknown here.

    Video: the ViT runs on each frame alone, so the vision fields hold the frames flattened,
    (B_img * F, ...), row b * F + f being frame f of video b, before its temporal embedding.
    transformers' GitModel loops over the frames and returns none of the vision states; its
    `git.image_encoder(pixel_values[:, f], output_hidden_states=True)` gives frame f's rows."""

    logits: torch.Tensor  # (B, T, V), bit-identical to the call without the flags
    # n_layer + 1 of (B, N + T, D): the decoder's input [image ; text], then each block's output
    hidden_states: tuple[torch.Tensor, ...] | None = None
    # n_layer of (B, H, N + T, N + T): softmax probabilities, 0 where the mask blocks
    attentions: tuple[torch.Tensor, ...] | None = None
    # vision n_layer + 1 of (B_img * F, n, D_vis): after ln_pre, then each block's output (before ln_post)
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    # vision n_layer of (B_img * F, H_vis, n, n)
    vision_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class Recorder:
    """The lists the hooks fill during one forward pass; None where nothing was asked."""

    hidden_states: list[torch.Tensor] | None
    attentions: list[list[torch.Tensor]] | None  # one Attention.weights list per decoder layer
    vision_hidden_states: list[torch.Tensor] | None
    vision_attentions: list[torch.Tensor] | None

    def output(self, logits: torch.Tensor) -> GitOutput:
        attentions = None
        if self.attentions is not None:
            for i, sink in enumerate(self.attentions):
                if len(sink) != 1:
                    raise ValueError(f"decoder layer {i} recorded {len(sink)} attention maps in one forward pass, "
                                     "not 1; output_attentions needs an attention that fills Attention.weights "
                                     "once per call (model/decoder.py)")
            attentions = tuple(sink[0] for sink in self.attentions)
        return GitOutput(logits, _tuple(self.hidden_states), attentions,
                         _tuple(self.vision_hidden_states), _tuple(self.vision_attentions))


def _tuple(recorded: list[torch.Tensor] | None) -> tuple[torch.Tensor, ...] | None:
    return tuple(recorded) if recorded else None  # empty: the vision tower did not run (text alone)


@contextmanager
def recording(model: nn.Module, *, hidden_states: bool, attentions: bool) -> Iterator[Recorder]:
    """Record what `model` (a GIT) computes while inside; every hook and list is removed on exit."""
    vit_blocks = list(model.vision.vit.transformer.resblocks) if isinstance(model.vision, ImageEncoder) else []
    recorder = Recorder(hidden_states=[] if hidden_states else None,
                        attentions=[[] for _ in model.blocks] if attentions else None,
                        vision_hidden_states=[] if hidden_states else None,
                        vision_attentions=[] if attentions else None)
    handles = []
    if hidden_states:
        for blocks, sink in ((list(model.blocks), recorder.hidden_states), (vit_blocks, recorder.vision_hidden_states)):
            if blocks:  # the first block's input, then every block's output
                handles.append(blocks[0].register_forward_pre_hook(_append_input(sink)))
                handles += [block.register_forward_hook(_append_output(sink)) for block in blocks]
    previous = [block.attn.weights for block in model.blocks]
    try:
        if attentions:
            handles += [block.attn.register_forward_pre_hook(_append_vit_probabilities(recorder.vision_attentions))
                        for block in vit_blocks]
            for block, sink in zip(model.blocks, recorder.attentions):
                block.attn.weights = sink
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        for block, weights in zip(model.blocks, previous):
            block.attn.weights = weights


def _append_input(sink: list[torch.Tensor]) -> Callable:
    def hook(_module: nn.Module, args: tuple) -> None:
        sink.append(args[0])
    return hook


def _append_output(sink: list[torch.Tensor]) -> Callable:
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        sink.append(output)
    return hook


def _append_vit_probabilities(sink: list[torch.Tensor]) -> Callable:
    """A pre-hook on a ViT block's nn.MultiheadAttention, which open_clip calls as attn(q_x, k_x, v_x)
    with need_weights=False: the probabilities are computed from the same inputs beside the call."""
    def hook(attn: nn.MultiheadAttention, args: tuple) -> None:
        sink.append(vit_attention_probabilities(attn, args[0], args[1]))
    return hook


def vit_attention_probabilities(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The probabilities a batch-first nn.MultiheadAttention without mask applies to its values,
    (B, n, D_vis) twice -> (B, H_vis, n, n), before dropout. Written out from its fused in_proj rather
    than asked of it with need_weights=True: that would run the attention a second time and, in
    training, draw a dropout mask, moving the random stream the real pass draws from next."""
    w_q, w_k, _ = attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = attn.in_proj_bias.chunk(3)
    q = rearrange(F.linear(query, w_q, b_q), "b n (h d) -> b h n d", h=attn.num_heads)
    k = rearrange(F.linear(key, w_k, b_k), "b n (h d) -> b h n d", h=attn.num_heads)
    return attention_probabilities(q, k, None)
