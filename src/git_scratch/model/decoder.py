"""GIT's text decoder: embeddings, attention, MLP, the post-LN block and its KV cache.

Nothing here knows about images: the model hands the blocks a sequence and a boolean mask
(True = may attend, see mask.py). References: BERT's layer as used by GIT, in
transformers/models/git/modeling_git.py (GitEmbeddings, GitLayer), and gpt-fast's KVCache.

Letters: B batch, S tokens in this call, L cache length (all keys), D width, H heads,
Dh head width, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import GitConfig
from .activations import activation_factory


class TextEmbedding(nn.Module):
    """Word + absolute position embedding, then LayerNorm. Image tokens never pass here."""

    def __init__(self, cfg: GitConfig) -> None:
        super().__init__()
        # padding_idx keeps the pad row's gradient at zero, as in the checkpoints' training.
        self.word = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.position = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps if cfg.embed_norm_eps is None else cfg.embed_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.word(input_ids) + self.position(positions)  # (B, S, D)
        return self.drop(self.norm(x))


class KVCache(nn.Module):
    """Preallocated keys and values of one layer, written in place at `input_pos`.

    Slots [0, N) hold the image tokens' keys and values, computed once per image; slots
    [N, N + T) fill up with text as decoding goes. Unwritten slots are zeros and the mask
    hides them (they lie in the causal future of every query that runs).
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        shape = (batch, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, S, Dh) at slots `input_pos` (S,); return the whole cache (B, H, L, Dh) twice."""
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and SDPA."""

    def __init__(self, cfg: GitConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # rows: [query; key; value], each (H Dh)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        # A list: each call also appends its attention probabilities (B, H, S, L) there (tools/attention.py,
        # GIT.forward's output_attentions). None: nothing is computed beside SDPA.
        self.weights: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None = None,
                input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, D); mask (B, 1, S, L) boolean, L = S without a cache, the cache length with one;
        positions (B, S), the text position of each token, 0 for image tokens (see `heads`)."""
        q, k, v = self.heads(x, positions)  # (B, H, S, Dh) each
        if cache is not None:
            k, v = cache.update(input_pos, k, v)  # (B, H, L, Dh)
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, S, Dh)
        if self.weights is not None:
            # Beside SDPA, not instead of it: asking for the probabilities changes no output bit.
            self.weights.append(attention_probabilities(q, k, mask))
        return self.out(rearrange(y, "b h s d -> b s (h d)"))

    def heads(self, x: torch.Tensor, positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x (B, S, D), (B, H, S, Dh) each. `positions` is unused here:
        GIT's positions are absolute, added once by TextEmbedding. An attention that encodes
        position itself changes this function, e.g. rotary rotates q and k (docs/extending.md)."""
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.n_head)
        return q, k, v

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of x (B, S, D) alone, (B, H, S, Dh) each: the rows [key; value] of
        the fused projection, without the query, the attention or anything after it. It multiplies
        by two thirds of qkv's weight directly, so hooks on `qkv` do not see this product."""
        width = self.qkv.out_features // 3
        kv = F.linear(x, self.qkv.weight[width:], self.qkv.bias[width:])  # (B, S, 2D)
        k, v = rearrange(kv, "b s (two h d) -> two b h s d", two=2, h=self.n_head)
        return k, v


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The probabilities SDPA applies to the values, written out: softmax(q k^T / sqrt(Dh)), 0 where
    the mask is False. q (B, H, S, Dh), k (B, H, L, Dh) -> (B, H, S, L), before any dropout."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, S, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, -float("inf"))
    return scores.softmax(-1)


class MLP(nn.Module):
    def __init__(self, cfg: GitConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.act = activation_factory(cfg.act)()
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class DecoderBlock(nn.Module):
    """One BERT layer. It is POST-LN: the LayerNorm comes after each residual sum,
    `x = norm(x + sublayer(x))`, unlike the pre-LN blocks of GPT-2 or the CLIP ViT. The
    checkpoints were trained this way; changing it changes every number."""

    def __init__(self, cfg: GitConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None = None,
                input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, mask, cache, input_pos, positions)))
        return self.norm2(x + self.drop(self.mlp(x)))

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values this block's attention computes from its input x (B, S, D), and
        nothing else: generation needs only these for the image tokens of the last layer. A
        block that feeds attention something else (pre-LN feeds norm1(x)) changes this too."""
        return self.attn.keys_values(x)
