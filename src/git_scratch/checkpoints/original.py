"""The original microsoft/GenerativeImage2Text checkpoints, `output/GIT_*/snapshot/model.pt`, -> GIT.

This is the only module that knows the original's names. A model.pt is a pickle holding
{"model": state_dict} (inference.py: `torch_load(pretrained)['model']`), keys as the original's
CaptioningModel names them: `image_encoder.` for OpenAI CLIP's VisualTransformer (layers/CLIP/model.py),
`textual.` for its decoder with BERT's layer names (layers/decoder.py, layers/bert/modeling_bert.py),
`img_temperal_embedding.N` for a video model's frames; the pretrain checkpoints add `module.` in front
(the original strips it, torch_common.py). It is read with `weights_only=True`: no code in it runs.

Two literal tables: VARIANTS (name -> the original's settings, with their source) and KEY_MAP (the
original's key -> ours), through the same expansion as the hub layout's (hub.expanded_key_map).
Loading is strict: every key is used or named in DROPPED, and the first problem is the error.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..config import GitConfig, VisionConfig
from ..model.git import GIT
from .hub import expanded_key_map, expected_shapes, model_from_state_dict, ready

# --- the variants ------------------------------------------------------------------------------

# Name (the original's model_name, its folder under output/) -> (its settings, our preset of that shape).
# Source: the original's aux_data/models/<name>/parameter.yaml at commit faae4fb (GIT_BASE, GIT_BASE_COCO
# and GIT_BASE_TEXTCAPS have none: every default); model.py's get_git_model reads image_encoder_type
# (default CLIPViT_B_16), test_crop_size (the image side, default 224) and num_image_with_embedding
# (frames). The decoder is git-base's for all of them (model.py hard-wires it). test_respect_ratio_max is
# preprocessing only (data/processor.py), listed for completeness. MSRVTT captioning has no preset of its
# own: the VATEX/MSRVTT-QA one has its shape.
B16, L14 = "CLIPViT_B_16", "CLIPViT_L_14"
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "GIT_BASE": ({}, "git-base"),
    "GIT_BASE_COCO": ({}, "git-base-coco"),
    "GIT_BASE_TEXTCAPS": ({}, "git-base-textcaps"),
    "GIT_BASE_VQAv2": ({"test_crop_size": 480, "test_respect_ratio_max": 640}, "git-base-vqav2"),
    "GIT_BASE_TEXTVQA": ({"test_crop_size": 480, "test_respect_ratio_max": 640}, "git-base-textvqa"),
    "GIT_BASE_VATEX": ({"num_image_with_embedding": 6}, "git-base-vatex"),
    "GIT_BASE_MSRVTT": ({"num_image_with_embedding": 6}, "git-base-msrvtt-qa"),
    "GIT_BASE_MSRVTT_QA": ({"num_image_with_embedding": 6}, "git-base-msrvtt-qa"),
    "GIT_LARGE": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large"),
    "GIT_LARGE_COCO": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large-coco"),
    "GIT_LARGE_TEXTCAPS": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large-textcaps"),
    "GIT_LARGE_VQAv2": ({"image_encoder_type": L14, "visual_feature_size": 1024, "test_crop_size": 420,
                         "test_respect_ratio_max": 560}, "git-large-vqav2"),
    "GIT_LARGE_TEXTVQA": ({"image_encoder_type": L14, "visual_feature_size": 1024, "test_crop_size": 420,
                           "test_respect_ratio_max": 560}, "git-large-textvqa"),
    "GIT_LARGE_VATEX": ({"image_encoder_type": L14, "visual_feature_size": 1024, "num_image_with_embedding": 6},
                        "git-large-vatex"),
    "GIT_LARGE_MSRVTT": ({"image_encoder_type": L14, "visual_feature_size": 1024, "num_image_with_embedding": 6},
                         "git-large-msrvtt-qa"),
    "GIT_LARGE_MSRVTT_QA": ({"image_encoder_type": L14, "visual_feature_size": 1024,
                             "num_image_with_embedding": 6}, "git-large-msrvtt-qa"),
    "GIT_LARGE_R": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large-r"),
    "GIT_LARGE_R_COCO": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large-r-coco"),
    "GIT_LARGE_R_TEXTCAPS": ({"image_encoder_type": L14, "visual_feature_size": 1024}, "git-large-r-textcaps"),
}
TOWERS = {B16: "git-base", L14: "git-large"}  # image_encoder_type -> the preset with that ViT
# The original's text embedding LayerNorm (layers/decoder.py, WordAndPositionalEmbedding: eps=1e-8).
EMBED_NORM_EPS = 1e-8


def config_for_variant(name: str) -> GitConfig:
    """Our config of an original model, from its settings: the tower's preset, the image side, the frames."""
    settings, _ = VARIANTS[variant_name(name)]
    base = GitConfig.from_name(TOWERS[settings.get("image_encoder_type", B16)])
    vision = VisionConfig(**{**base.vision.__dict__, "image_size": settings.get("test_crop_size", 224)})
    return base.replace(vision=vision, n_frames=settings.get("num_image_with_embedding"),
                        embed_norm_eps=EMBED_NORM_EPS)


def variant_name(name: str) -> str:
    """The table's spelling of a variant name, any case; a one-line error naming the choices."""
    found = {key.lower(): key for key in VARIANTS}.get(name.lower())
    if found is None:
        raise ValueError(f"unknown original GIT variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    return found


def variant_from_path(path: Path) -> str | None:
    """The variant a model.pt's folders name: output/GIT_BASE_COCO/snapshot/model.pt, or GIT_BASE_COCO/model.pt."""
    folders = [path.parent.parent.name] if path.parent.name == "snapshot" else []
    for folder in folders + [path.parent.name]:
        try:
            return variant_name(folder)
        except ValueError:
            continue
    return None


# --- the key map -------------------------------------------------------------------------------

# The original's key (or a tuple of them concatenated along dim 0 into one of ours) -> our key. {v} is a
# ViT layer, {d} a decoder layer, {f} a frame (the original's (1, 1, D) per frame, stacked into our
# (F, 1, D)). The ViT is OpenAI CLIP's, as open_clip's: the same names, in_proj already fused. BERT's
# query/key/value become our fused qkv. textual.output.weight is tied to the word embedding in the
# original (it saves both names, one tensor); our presets keep them apart, as the hub checkpoints do.
VIT = "image_encoder"
BLOCK = "image_encoder.transformer.resblocks.{v}"
OUR_BLOCK = "vision.vit.transformer.resblocks.{v}"
BERT = "textual.transformer.encoder.layer.{d}"
KEY_MAP: list[tuple[str | tuple[str, ...], str]] = [
    (f"{VIT}.class_embedding", "vision.vit.class_embedding"),
    (f"{VIT}.conv1.weight", "vision.vit.conv1.weight"),
    (f"{VIT}.positional_embedding", "vision.vit.positional_embedding"),
    (f"{VIT}.ln_pre.weight", "vision.vit.ln_pre.weight"),
    (f"{VIT}.ln_pre.bias", "vision.vit.ln_pre.bias"),
    (f"{BLOCK}.attn.in_proj_weight", f"{OUR_BLOCK}.attn.in_proj_weight"),
    (f"{BLOCK}.attn.in_proj_bias", f"{OUR_BLOCK}.attn.in_proj_bias"),
    (f"{BLOCK}.attn.out_proj.weight", f"{OUR_BLOCK}.attn.out_proj.weight"),
    (f"{BLOCK}.attn.out_proj.bias", f"{OUR_BLOCK}.attn.out_proj.bias"),
    (f"{BLOCK}.ln_1.weight", f"{OUR_BLOCK}.ln_1.weight"),
    (f"{BLOCK}.ln_1.bias", f"{OUR_BLOCK}.ln_1.bias"),
    (f"{BLOCK}.mlp.c_fc.weight", f"{OUR_BLOCK}.mlp.c_fc.weight"),
    (f"{BLOCK}.mlp.c_fc.bias", f"{OUR_BLOCK}.mlp.c_fc.bias"),
    (f"{BLOCK}.mlp.c_proj.weight", f"{OUR_BLOCK}.mlp.c_proj.weight"),
    (f"{BLOCK}.mlp.c_proj.bias", f"{OUR_BLOCK}.mlp.c_proj.bias"),
    (f"{BLOCK}.ln_2.weight", f"{OUR_BLOCK}.ln_2.weight"),
    (f"{BLOCK}.ln_2.bias", f"{OUR_BLOCK}.ln_2.bias"),
    (f"{VIT}.ln_post.weight", "vision.vit.ln_post.weight"),
    (f"{VIT}.ln_post.bias", "vision.vit.ln_post.bias"),
    ("img_temperal_embedding.{f}", "vision.frame_embed"),
    ("textual.visual_projection.0.weight", "image_proj.0.weight"),
    ("textual.visual_projection.0.bias", "image_proj.0.bias"),
    ("textual.visual_projection.1.weight", "image_proj.1.weight"),
    ("textual.visual_projection.1.bias", "image_proj.1.bias"),
    ("textual.embedding.words.weight", "embed.word.weight"),
    ("textual.embedding.positions.weight", "embed.position.weight"),
    ("textual.embedding.layer_norm.weight", "embed.norm.weight"),
    ("textual.embedding.layer_norm.bias", "embed.norm.bias"),
    ((f"{BERT}.attention.self.query.weight", f"{BERT}.attention.self.key.weight",
      f"{BERT}.attention.self.value.weight"), "blocks.{d}.attn.qkv.weight"),
    ((f"{BERT}.attention.self.query.bias", f"{BERT}.attention.self.key.bias",
      f"{BERT}.attention.self.value.bias"), "blocks.{d}.attn.qkv.bias"),
    (f"{BERT}.attention.output.dense.weight", "blocks.{d}.attn.out.weight"),
    (f"{BERT}.attention.output.dense.bias", "blocks.{d}.attn.out.bias"),
    (f"{BERT}.attention.output.LayerNorm.weight", "blocks.{d}.norm1.weight"),
    (f"{BERT}.attention.output.LayerNorm.bias", "blocks.{d}.norm1.bias"),
    (f"{BERT}.intermediate.dense.weight", "blocks.{d}.mlp.fc.weight"),
    (f"{BERT}.intermediate.dense.bias", "blocks.{d}.mlp.fc.bias"),
    (f"{BERT}.output.dense.weight", "blocks.{d}.mlp.proj.weight"),
    (f"{BERT}.output.dense.bias", "blocks.{d}.mlp.proj.bias"),
    (f"{BERT}.output.LayerNorm.weight", "blocks.{d}.norm2.weight"),
    (f"{BERT}.output.LayerNorm.bias", "blocks.{d}.norm2.bias"),
    ("textual.output.weight", "lm_head.weight"),
    ("textual.output.bias", "lm_head.bias"),
]
# Keys of the original that GIT never uses: CLIP's image-text projection (the original sets
# output_grid=True and returns every token after ln_post, before proj).
DROPPED = (f"{VIT}.proj",)
PREFIX = "module."  # DistributedDataParallel's, on the pretrain checkpoints


def from_original_state_dict(sd: dict[str, torch.Tensor], cfg: GitConfig, source: str = "model.pt",
                             variant: str | None = None) -> dict[str, torch.Tensor]:
    """The original's tensors -> ours, strictly: the first missing, unexpected or misshapen key is the error."""
    sd = {_without_prefix(k): v for k, v in sd.items()}
    expected = expected_shapes(cfg)
    ours: dict[str, torch.Tensor] = {}
    used = set(DROPPED) | ({"textual.output.weight"} if cfg.tie_embeddings else set())  # tied: the embedding wins
    fits = f"{variant}" if variant else "the config given"
    for keys, key in expanded_key_map(cfg, KEY_MAP):
        used.update(keys)
        for k in keys:
            part_shape = (expected[key][0] // len(keys), *expected[key][1:])
            if k not in sd:
                raise ValueError(f"{source} lacks {k}, which {fits} has; {describe(sd)}")
            if tuple(sd[k].shape) != part_shape:
                raise ValueError(f"{source}: {k} has shape {tuple(sd[k].shape)}, {fits} needs {part_shape}; "
                                 f"{describe(sd)}")
            if not sd[k].is_floating_point():
                raise ValueError(f"{source}: {k} has dtype {str(sd[k].dtype).removeprefix('torch.')}, not a "
                                 "floating-point type; is it a model checkpoint?")
        ours[key] = torch.cat([sd[k] for k in keys]) if len(keys) > 1 else sd[keys[0]]
    # The original's tied LM head arrives as the word embedding's very storage: two of our parameters
    # sharing memory would be updated twice per step. Each gets its own.
    seen: set[int] = set()
    for key, tensor in ours.items():
        if tensor.untyped_storage().data_ptr() in seen:
            ours[key] = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
    unexpected = sorted(set(sd) - used)
    if unexpected:
        raise ValueError(f"{source} has {unexpected[0]}, which {fits} has not"
                         f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}; {describe(sd)}")
    return ours


def describe(sd: dict[str, torch.Tensor]) -> str:
    """What a state dict seems to be, for an error: which original variants have its shape, or what else."""
    if f"{VIT}.conv1.weight" not in sd or f"{VIT}.positional_embedding" not in sd:
        if any(k.startswith("git.") for k in sd):
            return ("it looks like a transformers GIT state dict: load the directory holding it and its "
                    "config.json instead")
        first = next(iter(sd), None)
        return (f"it is not an original GenerativeImage2Text checkpoint (first key {first!r}; the original's "
                "start with image_encoder. and textual.)")
    width, patch = sd[f"{VIT}.conv1.weight"].shape[0], sd[f"{VIT}.conv1.weight"].shape[-1]
    side = round((sd[f"{VIT}.positional_embedding"].shape[0] - 1) ** 0.5) * patch
    frames = sum(1 for k in sd if k.startswith("img_temperal_embedding.")) or None
    matches = [name for name in VARIANTS if _shape_of(name) == (width, patch, side, frames)]
    shape = f"a ViT of width {width}, patch {patch}, {side} px, {frames or 1} frame(s)"
    if not matches:
        return f"it holds {shape}, which no original variant has"
    return f"it holds {shape}, as {' and '.join(matches)} do: pass one of them as the variant"


def _shape_of(name: str) -> tuple[int, int, int, int | None]:
    cfg = config_for_variant(name)
    return cfg.vision.d_model, cfg.vision.patch_size, cfg.vision.image_size, cfg.n_frames


def _without_prefix(key: str) -> str:
    while key.startswith(PREFIX):  # as the original's strip_prefix_if_present, repeated
        key = key[len(PREFIX):]
    return key


# --- the file ----------------------------------------------------------------------------------


def read_original(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a model.pt ({"model": state dict}, or the state dict alone). weights_only=True:
    a pickle that needs code to load is refused, and nothing in it runs."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).splitlines()[0] if str(e) else "not a pickle of tensors"
        if "Weights only load failed" in reason:
            reason = "it needs Python code to load (weights_only refused it)"
        raise ValueError(f"{path} cannot be read safely: {reason}; nothing in it was run. Save the state dict "
                         "alone: torch.save({'model': model.state_dict()}, path)") from None
    except Exception as e:  # zipfile, EOF and storage errors for a damaged file
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "the file is damaged or truncated, copy it again") from None
    sd = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds no state dict of tensors (neither {{'model': state dict}} nor one); "
                         "is it a GenerativeImage2Text model.pt?")
    return sd


def load_original(path: str | Path, variant: str | None = None, *, config: GitConfig | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", fast: bool = True) -> GIT:
    """An original model.pt -> GIT in eval mode. The variant (e.g. "GIT_BASE_COCO") gives the config; when
    None, the file's folders must name it (output/GIT_BASE_COCO/snapshot/model.pt). `config` replaces the
    variant for an original model of other sizes (its embed_norm_eps should be EMBED_NORM_EPS)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass an original model.pt")
    if config is not None and variant is not None:
        raise ValueError(f"{path}: got the variant {variant!r} and a config; pass one of them")
    if config is None:
        variant = variant_name(variant) if variant else variant_from_path(path)
        if variant is None:
            raise ValueError(f"{path}: its folders name no original GIT variant; pass the variant (--variant), "
                             f"one of: {', '.join(VARIANTS)}")
        config = config_for_variant(variant)
    sd = from_original_state_dict(read_original(path), config, source=str(path), variant=variant)
    return ready(model_from_state_dict(sd, config), device=device, dtype=dtype, fast=fast)
