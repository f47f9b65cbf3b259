"""The image prefix, computed once, and the KV cache that decoding runs over.

Image tokens never attend to text (model/mask.py), so their keys and values in every layer
depend on the image alone. `encode_prefix` computes them once per image; each decoding row
copies its image's slice into its own cache, and nothing about the image is ever computed
again: not per step, not per beam, not per question.

The cache of a row is laid out along the key axis like the joint sequence:

    slot:   0 ........ N-1 | N ....... N+T0-1 | N+T0 ......... N+T-1
            image tokens   | prompt (left pad)| generated tokens
            (copied once)  | (prefill)        | (one slot per step)

and the score matrix of a call is (S queries, N + T keys): queries are the S text tokens of
this call at slots N+t..N+t+S-1; keys are every slot, those not yet written lying in the causal
future of every query, so the mask, built once per call for the whole length, hides them.

Letters: B images, R decoding rows, T0 prompt length, T = T0 + max_new_tokens, N image tokens,
S tokens in one call, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.decoder import KVCache
from ..model.git import GIT, text_positions


@dataclass(frozen=True)
class ImagePrefix:
    """Per-layer keys and values of the image tokens, each (B, H, N, Dh). With `caches`, they are
    the image slots of caches with room for text after them (`encode_prefix(room=)`)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    caches: tuple[KVCache, ...] | None = None

    @property
    def n_tokens(self) -> int:
        return self.keys[0].shape[2]


@dataclass
class DecodeState:
    caches: list[KVCache]
    mask: torch.Tensor  # (R, 1, N + T, N + T), built once per call
    positions: torch.Tensor  # (R, T) text positions counting real tokens only
    n_image: int


def encode_prefix(model: GIT, pixel_values: torch.Tensor, room: int = 0) -> ImagePrefix:
    """Vision encoder, projection, and every layer's keys/values over the image tokens alone.
    room > 0: the caches then get that many text slots after the image's, so that `prefill`, when
    each image is decoded by one row, decodes in them instead of copying every layer's image
    slots into new caches while the prefix still holds them all (`generate` asks for it: for a
    batch of 8 git-base images that was 58 MB held twice)."""
    image_embeds = model.encode_image(pixel_values)  # (B, N, D)
    batch, n_image = image_embeds.shape[:2]
    caches = model.new_caches(batch, n_image)
    slots = torch.arange(n_image, device=image_embeds.device)
    positions = torch.zeros(batch, n_image, dtype=torch.long, device=image_embeds.device)  # as in GIT.forward
    # The image block of the model's mask: GIT's is all True (image tokens see every image token),
    # which runs as no mask at all, SDPA's fastest path.
    image_mask = model.attention_mask(n_image, image_embeds.new_zeros(batch, 0, dtype=torch.bool))  # (B, 1, N, N)
    image_mask = None if bool(image_mask.all()) else image_mask
    x = image_embeds
    for block, cache in zip(model.blocks[:-1], caches):
        x = block(x, image_mask, cache, slots, positions)
    # Text reads only the keys and values of the image tokens, so in the last layer their
    # query, attention and MLP would be thrown away: skip them (14% of the decoder's FLOPs over
    # the image tokens; measured 5% of the git-base prefix, ViT included, docs/performance.md).
    caches[-1].update(slots, *model.blocks[-1].keys_values(x))
    if room:  # moved one layer at a time: the image's attention above ran over its own slots only
        for i, cache in enumerate(caches):
            _, heads, _, head_dim = cache.k.shape
            roomy = KVCache(batch, heads, n_image + room, head_dim, cache.k.dtype, cache.k.device)
            roomy.k[:, :, :n_image], roomy.v[:, :, :n_image] = cache.k, cache.v
            caches[i] = roomy
    return ImagePrefix(tuple(c.k[:, :, :n_image] for c in caches), tuple(c.v[:, :, :n_image] for c in caches),
                       tuple(caches) if room else None)


def empty_prefix(model: GIT) -> ImagePrefix:
    """The prefix of text alone (transformers' GitForCausalLM without pixel_values): keys and
    values of zero image tokens in every layer, (1, H, 0, Dh), shared by all prompts as one
    image is."""
    caches = model.new_caches(1, 0)
    return ImagePrefix(tuple(c.k for c in caches), tuple(c.v for c in caches))


def prefill(model: GIT, prefix: ImagePrefix, image_index: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor, max_new_tokens: int) -> tuple[DecodeState, torch.Tensor]:
    """Start R rows: row r decodes image `image_index[r]` after prompt `input_ids[r]` (left-padded).
    Returns the state and the logits (R, V) after the last prompt token."""
    rows, n_prompt = input_ids.shape
    n_image = prefix.n_tokens
    generated = torch.ones(rows, max_new_tokens, dtype=torch.bool, device=input_ids.device)
    text_mask = torch.cat([attention_mask.bool(), generated], dim=1)  # (R, T)
    length = n_image + n_prompt + max_new_tokens
    if decodes_in_place(prefix, image_index, length):
        caches = list(prefix.caches)  # row r is image r: its text slots follow its image's
    else:
        caches = model.new_caches(rows, length)
        for cache, k, v in zip(caches, prefix.keys, prefix.values):
            cache.k[:, :, :n_image] = k[image_index]  # a copy per row; the image is never re-encoded
            cache.v[:, :, :n_image] = v[image_index]
    state = DecodeState(caches, model.attention_mask(n_image, text_mask), text_positions(text_mask), n_image)
    return state, decode_step(model, state, input_ids, 0)


def decodes_in_place(prefix: ImagePrefix, image_index: torch.Tensor, length: int) -> bool:
    """Whether prefill may decode in the prefix's own caches: they have room for `length` slots and
    row r decodes image r, each image once. Their text slots are zeros or, after an earlier
    decode, stale values; either way a slot is written before a query may see it (the mask)."""
    if prefix.caches is None or prefix.caches[0].k.shape[2] != length:
        return False
    rows = torch.arange(prefix.keys[0].shape[0], device=image_index.device)
    return image_index.shape == rows.shape and bool(torch.equal(image_index, rows))


def decode_step(model: GIT, state: DecodeState, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """Run text tokens (R, S) at text positions start..start+S-1; logits (R, V) of the last one."""
    n = state.n_image
    width = input_ids.shape[1]
    slots = torch.arange(n + start, n + start + width, device=input_ids.device)
    positions = state.positions[:, start:start + width]  # (R, S)
    x = model.embed(input_ids, positions)  # (R, S, D)
    mask = state.mask[:, :, n + start:n + start + width]  # (R, 1, S, N + T)
    for block, cache in zip(model.blocks, state.caches):
        x = block(x, mask, cache, slots, positions)
    return model.lm_head(model.final_norm(x[:, -1])).float()  # the LM head only where a token is chosen


def reorder_beams(state: DecodeState, rows: torch.Tensor, n_text: int) -> None:
    """Beam search moved hypotheses between rows: copy text slots from `rows`. Image slots stay:
    rows only move within one image's beams, which share them. Mask and positions rows are
    equal across those beams too (same prompt, one slot per step)."""
    text = slice(state.n_image, state.n_image + n_text)
    for cache in state.caches:
        cache.k[:, :, text] = cache.k[rows, :, text]
        cache.v[:, :, text] = cache.v[rows, :, text]
