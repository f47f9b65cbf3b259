"""GIT: image encoder -> visual projection -> one post-LN decoder over [image ; text] -> LM head.

Reference: Wang et al., "GIT: A Generative Image-to-text Transformer" (2022), and
transformers/models/git/modeling_git.py, which our numbers match (tests/parity/).

Letters: B batch, F frames, N image tokens, T text tokens, D width, V vocab.

    pixel_values   (B, 3, H, W) or (B, F, 3, H, W)
    image_tokens   (B, N, D_vis)      vision.py
    image_embeds   (B, N, D)          Linear + LayerNorm
    text_embeds    (B, T, D)          decoder.py: word + position + LayerNorm
    x              (B, N + T, D)      concat, then the blocks under one mask (mask.py)
    logits         (B, T, V)          LM head on the text positions only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import GitConfig
from .decoder import DecoderBlock, KVCache, TextEmbedding
from .mask import git_attention_mask
from .outputs import GitOutput, recording
from .vision import ImageEncoder, sincos_table


class GIT(nn.Module):
    def __init__(self, cfg: GitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = ImageEncoder(cfg.vision, cfg.n_frames)
        # GIT's projection normalises with the vision tower's epsilon, not the decoder's.
        self.image_proj = nn.Sequential(
            nn.Linear(cfg.vision.d_model, cfg.d_model), nn.LayerNorm(cfg.d_model, eps=cfg.vision.norm_eps)
        )
        self.embed = TextEmbedding(cfg)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layer))
        # Post-LN blocks end in a LayerNorm, so the head reads normalised vectors and GIT has no
        # final norm. A pre-LN decoder needs one here (docs/extending.md); this one is a no-op.
        self.final_norm = nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.grad_checkpointing = False
        self.apply(self._init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.word.weight

    # --- conveniences users expect of a model -------------------------------------------------
    # Loading, saving and decoding live above the model (checkpoints/, generation/), which import
    # it; these one-line delegations import them when called, so model/ imports nothing above it.

    @classmethod
    def from_config(cls, cfg: GitConfig) -> GIT:
        return cls(cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> GIT:
        """`git_scratch.load(path, dtype=..., device=..., accel=True)`: an official checkpoint directory."""
        from ..checkpoints.files import load_pretrained  # lazy: checkpoints/ imports this module

        return load_pretrained(path, **kwargs)

    def save_pretrained(self, path: str | Path, *, force: bool = False) -> None:
        """`git_scratch.save(model, path)`: config.json + model.safetensors in the official layout, atomically."""
        from ..checkpoints.files import save_pretrained  # lazy: checkpoints/ imports this module

        save_pretrained(self, path, force=force)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's init (as GIT's): normal(0, init_std) weights, zero biases, unit LayerNorms.
        std = self.cfg.init_std
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):  # the ViT's fused in_proj is a bare Parameter
            nn.init.normal_(module.in_proj_weight, std=std)
            nn.init.zeros_(module.in_proj_bias)
        elif module is self.vision:
            nn.init.normal_(module.vit.class_embedding, std=std)
            if self.cfg.vision.position_init:
                table = sincos_table(self.cfg.vision.grid, self.cfg.vision.d_model)
                module.vit.positional_embedding.data.copy_(self.cfg.vision.position_init * table)
            else:
                nn.init.normal_(module.vit.positional_embedding, std=std)

    # --- the forward pass ------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) or (B, F, 3, H, W) -> image_embeds (B, N, D)."""
        check_pixel_values(pixel_values, self.cfg)
        return self.image_proj(self.vision(pixel_values))

    def forward(self, pixel_values: torch.Tensor | None, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, *, segment_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> torch.Tensor | GitOutput:
        """Logits (B, T, V) of the text positions. attention_mask (B, T): 1 real token, 0 padding.
        segment_ids (B, T), optional: several texts packed after one image (mask.py).
        pixel_values None: text alone, as transformers' GitForCausalLM allows: zero image tokens.
        position_ids (B, T), or (T,) for every row, optional: the text positions to embed instead of
        ours, which count real tokens only (`text_positions`); torch.arange(T) gives those of
        transformers' plain forward, which counts 0..T-1 whatever the mask.
        output_hidden_states, output_attentions: return a GitOutput (outputs.py) with every layer's
        hidden states or attention probabilities, decoder and ViT, recorded around this same pass."""
        if output_hidden_states or output_attentions:
            with recording(self, hidden_states=output_hidden_states, attentions=output_attentions) as recorder:
                logits = self.forward(pixel_values, input_ids, attention_mask, segment_ids=segment_ids,
                                      position_ids=position_ids)
            return recorder.output(logits)
        if pixel_values is None:
            image_embeds = self.embed.word.weight.new_zeros(input_ids.shape[0], 0, self.cfg.d_model)  # (B, 0, D)
        else:
            image_embeds = self.encode_image(pixel_values)  # (B_img, N, D)
        text_mask = text_mask_for(input_ids, attention_mask)
        if image_embeds.shape[0] != input_ids.shape[0]:
            if image_embeds.shape[0] != 1:
                raise ValueError(f"pixel_values holds {image_embeds.shape[0]} images but input_ids holds "
                                 f"{input_ids.shape[0]} rows; give one image per row, or a single image for all")
            image_embeds = image_embeds.expand(input_ids.shape[0], -1, -1)
        n_image = image_embeds.shape[1]
        if position_ids is None:
            positions = text_positions(text_mask, segment_ids)  # (B, T)
        else:
            positions = check_position_ids(position_ids, input_ids, self.cfg.max_positions)  # (B, T)
        text_embeds = self.embed(input_ids, positions)  # (B, T, D)
        x = torch.cat([image_embeds, text_embeds], dim=1)  # (B, N + T, D)
        mask = self.attention_mask(n_image, text_mask, segment_ids)  # (B, 1, N + T, N + T)
        positions = F.pad(positions, (n_image, 0))  # (B, N + T): image tokens at 0, for the blocks
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, mask, positions=positions, use_reentrant=False)  # recomputed in backward
            else:
                x = block(x, mask, positions=positions)
        return self.lm_head(self.final_norm(x[:, n_image:]))  # (B, T, V)

    def attention_mask(self, n_image: int, text_mask: torch.Tensor,
                       segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The mask over `[image ; text]`, (B, 1, N + T, N + T), True where a query may attend:
        GIT's, from mask.py. The one place that decides who sees whom: the forward pass, generation,
        the attention maps and the mask picture all ask the model, so a variant with another mask
        overrides this method and nothing else. Generation relies on image rows never seeing text."""
        return git_attention_mask(n_image, text_mask, segment_ids)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Trade compute for memory in training: activations of each block are recomputed."""
        self.grad_checkpointing = enabled
        self.vision.set_grad_checkpointing(enabled)

    def generate(self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """`git_scratch.generate(model, ...)`: token ids, prompt included, as transformers' `generate`
        returns them (greedy, sampling, beam search; its keywords are listed there), or a
        GenerateOutput with return_dict_in_generate=True. `constraint=` plugs in one's own logits
        processor; `semantics=` picks whose beam-search rules to reproduce."""
        from ..generation.search import generate  # lazy: generation/ imports this module

        return generate(self, pixel_values, input_ids, attention_mask, **kwargs)

    def answer(self, pixel_values: torch.Tensor, questions: list[list[int]], **kwargs: Any) -> torch.Tensor:
        """`git_scratch.answer(model, ...)`: every question about every image, each image encoded
        once; returns the answers' ids alone, the prompt removed."""
        from ..generation.search import answer  # lazy: generation/ imports this module

        return answer(self, pixel_values, questions, **kwargs)

    def classify(self, pixel_values: torch.Tensor, answers: list[list[int]], **kwargs: Any) -> list:
        """`git_scratch.classify(model, ...)`: generation inside a trie of allowed answers."""
        from ..generation.constrain import classify  # lazy: generation/ imports this module

        return classify(self, pixel_values, answers, **kwargs)

    def new_caches(self, batch: int, max_len: int) -> list[KVCache]:
        """Empty per-layer caches for `batch` rows and `max_len` = image tokens + text tokens."""
        p = self.lm_head.weight
        return [KVCache(batch, self.cfg.n_head, max_len, self.cfg.head_dim, p.dtype, p.device)
                for _ in self.blocks]


def text_positions(text_mask: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Position of each text token counting real tokens only, so left padding does not shift
    the positions of the row: a padded row gets the logits it would get alone. With packed
    segments, positions restart at 0 with each segment. (B, T)"""
    counts = text_mask.long().cumsum(-1)  # (B, T) real tokens so far
    if segment_ids is not None:
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        # real tokens before this segment began, carried forward over the segment
        before = torch.where(starts, counts - text_mask.long(), torch.zeros_like(counts)).cummax(-1).values
        counts = counts - before
    return (counts - 1).clamp(min=0)


def check_position_ids(position_ids: torch.Tensor, input_ids: torch.Tensor, max_positions: int) -> torch.Tensor:
    """A caller's position_ids, checked in one line each, broadcast to input_ids' (B, T)."""
    if not isinstance(position_ids, torch.Tensor) or position_ids.dtype not in (torch.int64, torch.int32):
        what = position_ids.dtype if isinstance(position_ids, torch.Tensor) else type(position_ids).__name__
        raise ValueError(f"position_ids is {what}; pass integer positions (torch.long), e.g. torch.arange(T)")
    batch, n_text = input_ids.shape
    rows_fit = position_ids.ndim == 1 or (position_ids.ndim == 2 and position_ids.shape[0] in (1, batch))
    if not rows_fit or position_ids.shape[-1] != n_text:
        raise ValueError(f"position_ids has shape {tuple(position_ids.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}; pass (B, T) like input_ids, or (T,) for every row")
    if position_ids.numel() and (position_ids.min() < 0 or position_ids.max() >= max_positions):
        raise ValueError(f"position_ids holds values from {position_ids.min().item()} to {position_ids.max().item()} "
                         f"but the model has {max_positions} text positions; keep them in 0..{max_positions - 1}")
    return position_ids.expand(batch, n_text)


def text_mask_for(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}; they must match")
    return attention_mask.bool()


def check_pixel_values(pixel_values: torch.Tensor, cfg: GitConfig) -> None:
    """One-line errors for the shapes users get wrong, before they reach a conv deep inside."""
    if pixel_values is None:  # reached only where images are needed: forward and generate take None
        raise ValueError("pixel_values is None here, where an image is needed; pass ImageProcessor()(images), "
                         "or call the model or generate with None for text alone")
    if not isinstance(pixel_values, torch.Tensor):
        hint = "inputs['pixel_values']" if isinstance(pixel_values, dict) else "ImageProcessor()(images)"
        raise ValueError(f"pixel_values is a {type(pixel_values).__name__}, not a tensor; pass {hint}")
    if pixel_values.dtype == torch.uint8:
        raise ValueError("pixel_values is uint8 (raw pixels); pass them through ImageProcessor, which rescales "
                         "and normalises them")
    if pixel_values.ndim == 5:
        frames = pixel_values.shape[1]
        if cfg.n_frames is None:
            raise ValueError("pixel_values is 5-D (video) but this model has no temporal embeddings; "
                             "pass images as (B, 3, H, W) or load a video checkpoint")
        if frames > cfg.n_frames:
            raise ValueError(f"pixel_values has {frames} frames but the model has temporal embeddings "
                             f"for {cfg.n_frames}; sample at most {cfg.n_frames} frames")
    elif pixel_values.ndim != 4:
        raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected (B, 3, H, W) "
                         "for images or (B, F, 3, H, W) for video")
    if pixel_values.shape[-3] != 3:
        raise ValueError(f"pixel_values has {pixel_values.shape[-3]} channels; expected 3 (RGB)")
    if min(pixel_values.shape[-2:]) < cfg.vision.patch_size:
        raise ValueError(f"image of {tuple(pixel_values.shape[-2:])} pixels is smaller than one "
                         f"{cfg.vision.patch_size}-pixel patch; resize it with the image processor")


def git_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """GIT's captioning loss, equal to transformers' for the same labels: the logits at text
    position t predict the label at t + 1 (image positions never enter: `logits` is text
    only); labels of -100 (prompt, padding) are ignored; mean over the remaining tokens."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
        ignore_index=-100, label_smoothing=label_smoothing,
    )
