"""Official Hugging Face GIT checkpoints <-> git_scratch, in both directions: the names.

This is the only module that knows HF's names: the fields of `config.json` and the keys of
`model.safetensors`. Everything goes through two literal tables, FIELD_MAP and KEY_MAP, so a
reader can check every name against transformers/models/git/modeling_git.py by eye. Reading and
writing the files themselves is files.py.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

import torch

from .. import accel
from ..config import GitConfig, VisionConfig
from ..model.git import GIT

# --- config.json ---------------------------------------------------------------------------

# (HF field, our field). Every field that changes the numbers is here; config_from_hf rejects
# values of the fields in REQUIRED_VALUES that we do not implement.
FIELD_MAP: list[tuple[str, str]] = [
    ("vocab_size", "vocab_size"),
    ("hidden_size", "d_model"),
    ("num_hidden_layers", "n_layer"),
    ("num_attention_heads", "n_head"),
    ("intermediate_size", "d_ff"),
    ("hidden_act", "act"),
    ("layer_norm_eps", "norm_eps"),
    ("max_position_embeddings", "max_positions"),
    ("num_image_with_embedding", "n_frames"),
    ("tie_word_embeddings", "tie_embeddings"),
    ("hidden_dropout_prob", "dropout"),
    ("attention_probs_dropout_prob", "attn_dropout"),
    ("initializer_range", "init_std"),
    ("pad_token_id", "pad_id"),
    ("bos_token_id", "bos_id"),
    ("eos_token_id", "eos_id"),
]
VISION_FIELD_MAP: list[tuple[str, str]] = [
    ("image_size", "image_size"),
    ("patch_size", "patch_size"),
    ("hidden_size", "d_model"),
    ("num_hidden_layers", "n_layer"),
    ("num_attention_heads", "n_head"),
    ("intermediate_size", "d_ff"),
    ("hidden_act", "act"),
    ("layer_norm_eps", "norm_eps"),
    ("attention_dropout", "attn_dropout"),
]
# Fields transformers does not have, written only when set, read when present. transformers keeps an
# unknown config.json field as an attribute and uses it nowhere, so it loads such a file as before.
# embed_layer_norm_eps: the original microsoft/GenerativeImage2Text's text-embedding LayerNorm epsilon,
# 1e-8 (checkpoints/original.py); transformers applies layer_norm_eps there, 2e-6..5e-6 apart on logits.
OWN_FIELD_MAP: list[tuple[str, str]] = [("embed_layer_norm_eps", "embed_norm_eps")]
# Our field -> the name a user sees in config.json, for error messages.
HF_NAMES = {ours: hf for hf, ours in FIELD_MAP + OWN_FIELD_MAP} | {
    f"vision.{ours}": f"vision_config.{hf}" for hf, ours in VISION_FIELD_MAP}
# Fields HF honours that we support at one value only: (section, field) -> accepted values.
REQUIRED_VALUES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("", "position_embedding_type"): ("absolute",),
    ("vision_config", "num_channels"): (3,),
}


def config_from_hf(data: dict[str, Any], source: str = "config.json") -> GitConfig:
    """HF config.json contents -> GitConfig. HF's defaults fill absent fields, as in transformers."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a JSON object; is this a GIT checkpoint's config.json?")
    if data.get("model_type", "git") != "git":
        raise ValueError(f"{source} has model_type {data['model_type']!r}, not 'git'; "
                         "point at a GIT checkpoint (e.g. microsoft/git-base)")
    vision = data.get("vision_config") or {}
    if not isinstance(vision, dict):
        raise ValueError(f"{source}: vision_config must be a JSON object, got {vision!r}")
    for (section, name), accepted in REQUIRED_VALUES.items():
        block = vision if section else data
        if name in block and block[name] not in accepted:
            where = f"{section}.{name}" if section else name
            raise ValueError(f"{source}: {where} = {block[name]!r} is not supported (only {accepted[0]!r})")
    text = {ours: _single(data[hf], hf, source) for hf, ours in FIELD_MAP + OWN_FIELD_MAP if hf in data}
    vis = {ours: _square(vision[hf], hf, source) for hf, ours in VISION_FIELD_MAP if hf in vision}
    text.setdefault("tie_embeddings", False)  # HF GitConfig's default, unlike most models
    try:
        return GitConfig(**text, vision=VisionConfig(**vis))
    except (TypeError, ValueError) as e:
        # config.py names our fields; add the name the user sees in config.json, and a fix.
        what, _, fix = str(e).partition("; ")
        field = re.match(r"config field ([\w.]+)", what)
        if field and field.group(1) in HF_NAMES:
            what += f" ({HF_NAMES[field.group(1)]} in config.json)"
        fix = fix or "correct it, or restore config.json from the original checkpoint"
        raise ValueError(f"{source}: {what}; {fix}") from None


def config_to_hf(cfg: GitConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    data: dict[str, Any] = {"architectures": ["GitForCausalLM"], "model_type": "git"}
    data |= {hf: getattr(cfg, ours) for hf, ours in FIELD_MAP}
    data |= {hf: getattr(cfg, ours) for hf, ours in OWN_FIELD_MAP if getattr(cfg, ours) is not None}
    data["dtype"] = str(dtype).removeprefix("torch.")
    data["vision_config"] = {"model_type": "git_vision_model",
                             **{hf: getattr(cfg.vision, ours) for hf, ours in VISION_FIELD_MAP}}
    return data


def _single(value: Any, field: str, source: str) -> Any:
    """eos_token_id may be a list in HF configs; we generate with one end token."""
    if isinstance(value, list) and field.endswith("_token_id"):
        if len(value) != 1:
            raise ValueError(f"{source}: {field} = {value} lists {len(value)} ids; git_scratch stops on one, "
                             "set it to a single id")
        return value[0]
    if value is None and field.endswith("_token_id"):
        raise ValueError(f"{source}: {field} is null; set it to a token id (GIT uses pad 0, bos 101, eos 102)")
    return value


def _square(value: Any, field: str, source: str) -> Any:
    """image_size and patch_size may be [h, w] in HF configs; GIT's are square."""
    if isinstance(value, (list, tuple)):
        if len(value) not in (1, 2) or not all(isinstance(v, int) for v in value) or len(set(value)) != 1:
            raise ValueError(f"{source}: vision_config.{field} = {value} is not square; GIT needs one size")
        return value[0]
    return value


# --- the key map -----------------------------------------------------------------------------

# HF key (or a tuple of HF keys concatenated along dim 0 into one of ours) -> our key.
# {v} is a vision layer, {d} a decoder layer, {f} a frame: the per-frame (1, 1, D) vectors of
# HF are stacked into our one (F, 1, D) tensor. CLIP's separate q/k/v become open_clip's fused
# in_proj; BERT's query/key/value become our fused qkv.
VIT = "git.image_encoder.vision_model"
KEY_MAP: list[tuple[str | tuple[str, ...], str]] = [
    (f"{VIT}.embeddings.class_embedding", "vision.vit.class_embedding"),
    (f"{VIT}.embeddings.patch_embedding.weight", "vision.vit.conv1.weight"),
    (f"{VIT}.embeddings.position_embedding.weight", "vision.vit.positional_embedding"),
    (f"{VIT}.pre_layrnorm.weight", "vision.vit.ln_pre.weight"),
    (f"{VIT}.pre_layrnorm.bias", "vision.vit.ln_pre.bias"),
    ((f"{VIT}.encoder.layers.{{v}}.self_attn.q_proj.weight", f"{VIT}.encoder.layers.{{v}}.self_attn.k_proj.weight",
      f"{VIT}.encoder.layers.{{v}}.self_attn.v_proj.weight"), "vision.vit.transformer.resblocks.{v}.attn.in_proj_weight"),
    ((f"{VIT}.encoder.layers.{{v}}.self_attn.q_proj.bias", f"{VIT}.encoder.layers.{{v}}.self_attn.k_proj.bias",
      f"{VIT}.encoder.layers.{{v}}.self_attn.v_proj.bias"), "vision.vit.transformer.resblocks.{v}.attn.in_proj_bias"),
    (f"{VIT}.encoder.layers.{{v}}.self_attn.out_proj.weight", "vision.vit.transformer.resblocks.{v}.attn.out_proj.weight"),
    (f"{VIT}.encoder.layers.{{v}}.self_attn.out_proj.bias", "vision.vit.transformer.resblocks.{v}.attn.out_proj.bias"),
    (f"{VIT}.encoder.layers.{{v}}.layer_norm1.weight", "vision.vit.transformer.resblocks.{v}.ln_1.weight"),
    (f"{VIT}.encoder.layers.{{v}}.layer_norm1.bias", "vision.vit.transformer.resblocks.{v}.ln_1.bias"),
    (f"{VIT}.encoder.layers.{{v}}.mlp.fc1.weight", "vision.vit.transformer.resblocks.{v}.mlp.c_fc.weight"),
    (f"{VIT}.encoder.layers.{{v}}.mlp.fc1.bias", "vision.vit.transformer.resblocks.{v}.mlp.c_fc.bias"),
    (f"{VIT}.encoder.layers.{{v}}.mlp.fc2.weight", "vision.vit.transformer.resblocks.{v}.mlp.c_proj.weight"),
    (f"{VIT}.encoder.layers.{{v}}.mlp.fc2.bias", "vision.vit.transformer.resblocks.{v}.mlp.c_proj.bias"),
    (f"{VIT}.encoder.layers.{{v}}.layer_norm2.weight", "vision.vit.transformer.resblocks.{v}.ln_2.weight"),
    (f"{VIT}.encoder.layers.{{v}}.layer_norm2.bias", "vision.vit.transformer.resblocks.{v}.ln_2.bias"),
    (f"{VIT}.post_layernorm.weight", "vision.vit.ln_post.weight"),
    (f"{VIT}.post_layernorm.bias", "vision.vit.ln_post.bias"),
    ("git.img_temporal_embedding.{f}", "vision.frame_embed"),
    ("git.visual_projection.visual_projection.0.weight", "image_proj.0.weight"),
    ("git.visual_projection.visual_projection.0.bias", "image_proj.0.bias"),
    ("git.visual_projection.visual_projection.1.weight", "image_proj.1.weight"),
    ("git.visual_projection.visual_projection.1.bias", "image_proj.1.bias"),
    ("git.embeddings.word_embeddings.weight", "embed.word.weight"),
    ("git.embeddings.position_embeddings.weight", "embed.position.weight"),
    ("git.embeddings.LayerNorm.weight", "embed.norm.weight"),
    ("git.embeddings.LayerNorm.bias", "embed.norm.bias"),
    (("git.encoder.layer.{d}.attention.self.query.weight", "git.encoder.layer.{d}.attention.self.key.weight",
      "git.encoder.layer.{d}.attention.self.value.weight"), "blocks.{d}.attn.qkv.weight"),
    (("git.encoder.layer.{d}.attention.self.query.bias", "git.encoder.layer.{d}.attention.self.key.bias",
      "git.encoder.layer.{d}.attention.self.value.bias"), "blocks.{d}.attn.qkv.bias"),
    ("git.encoder.layer.{d}.attention.output.dense.weight", "blocks.{d}.attn.out.weight"),
    ("git.encoder.layer.{d}.attention.output.dense.bias", "blocks.{d}.attn.out.bias"),
    ("git.encoder.layer.{d}.attention.output.LayerNorm.weight", "blocks.{d}.norm1.weight"),
    ("git.encoder.layer.{d}.attention.output.LayerNorm.bias", "blocks.{d}.norm1.bias"),
    ("git.encoder.layer.{d}.intermediate.dense.weight", "blocks.{d}.mlp.fc.weight"),
    ("git.encoder.layer.{d}.intermediate.dense.bias", "blocks.{d}.mlp.fc.bias"),
    ("git.encoder.layer.{d}.output.dense.weight", "blocks.{d}.mlp.proj.weight"),
    ("git.encoder.layer.{d}.output.dense.bias", "blocks.{d}.mlp.proj.bias"),
    ("git.encoder.layer.{d}.output.LayerNorm.weight", "blocks.{d}.norm2.weight"),
    ("git.encoder.layer.{d}.output.LayerNorm.bias", "blocks.{d}.norm2.bias"),
    ("output.weight", "lm_head.weight"),  # absent from tied checkpoints: it is the word embedding
    ("output.bias", "lm_head.bias"),
]
# The HF keys that are parts of a fused tensor of ours (q, k, v), any layer.
FUSED_PARTS = re.compile("|".join(re.escape(h).replace(r"\{v\}", r"\d+").replace(r"\{d\}", r"\d+")
                                  for hf, _ in KEY_MAP if isinstance(hf, tuple) for h in hf))
# Index buffers (arange) that older transformers versions saved; nothing to load.
DROPPED = ("git.embeddings.position_ids", f"{VIT}.embeddings.position_ids")
# Problems named one by one in a loading error; the rest are counted.
MAX_LISTED = 10
# transformers < 5 spelled the temporal embedding "temperal"; the released video checkpoints do too.
LEGACY_PREFIXES = {"git.img_temperal_embedding.": "git.img_temporal_embedding."}


def expanded_key_map(cfg: GitConfig, key_map: list[tuple[str | tuple[str, ...], str]] = KEY_MAP
                     ) -> Iterator[tuple[tuple[str, ...], str]]:
    """KEY_MAP (or another layout's table, checkpoints/original.py) with {v}, {d}, {f} filled in for
    this config: (their keys, our key)."""
    for hf, ours in key_map:
        hf = (hf,) if isinstance(hf, str) else hf
        if ours == "lm_head.weight" and cfg.tie_embeddings:
            continue
        if "{v}" in ours:
            for i in range(cfg.vision.n_layer):
                yield tuple(h.replace("{v}", str(i)) for h in hf), ours.replace("{v}", str(i))
        elif "{d}" in ours:
            for i in range(cfg.n_layer):
                yield tuple(h.replace("{d}", str(i)) for h in hf), ours.replace("{d}", str(i))
        elif "{f}" in hf[0]:
            if cfg.n_frames:
                yield tuple(hf[0].replace("{f}", str(i)) for i in range(cfg.n_frames)), ours
        else:
            yield hf, ours


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor], cfg: GitConfig, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """HF tensors -> ours. Every problem (missing, unexpected, wrong shape, not floating point) is
    reported in one error. Floating-point tensors of any precision are accepted as they are
    (load_pretrained casts them); integer, bool or complex ones where a weight belongs are refused."""
    hf_sd = {_modern_name(k): v for k, v in hf_sd.items()}
    expected = expected_shapes(cfg)
    ours: dict[str, torch.Tensor] = {}
    missing, bad, used = [], [], set(DROPPED)
    if cfg.tie_embeddings:
        used.add("output.weight")  # a tied checkpoint may still carry it; the word embedding wins
    for hf_keys, key in expanded_key_map(cfg):
        used.update(hf_keys)
        absent = [h for h in hf_keys if h not in hf_sd]
        if absent:
            missing += absent
            continue
        part_shape = _hf_shape(expected[key], len(hf_keys))  # each of q, k, v; each frame
        wrong = [f"{h} has shape {tuple(hf_sd[h].shape)}, config.json implies {part_shape}"
                 for h in hf_keys if tuple(hf_sd[h].shape) != part_shape]
        wrong += [f"{h} has dtype {str(hf_sd[h].dtype).removeprefix('torch.')}, not a floating-point type"
                  for h in hf_keys if not hf_sd[h].is_floating_point()]
        if wrong:
            bad += wrong
            continue
        ours[key] = torch.cat([hf_sd[h] for h in hf_keys]) if len(hf_keys) > 1 else hf_sd[hf_keys[0]]
    unexpected = sorted(set(hf_sd) - used)
    problems = ([f"missing {listed(missing)}"] if missing else []) + \
               ([f"unexpected {listed(unexpected)}"] if unexpected else []) + bad[:MAX_LISTED]
    if len(bad) > MAX_LISTED:
        problems.append(f"{len(bad) - MAX_LISTED} more tensors of the wrong shape or dtype")
    if problems:
        raise ValueError(f"{source} does not fit its config.json: {'; '.join(problems)}; "
                         "check that the weights and config.json come from the same checkpoint")
    return ours


def ready(model: GIT, *, device: torch.device | str, dtype: torch.dtype, fast: bool) -> GIT:
    """A loaded model as every loader returns it: on `device` in `dtype`, in eval mode, and with
    `fast` accel's kernels; in bf16 those pack the products' weights for inference (accel/precision.py:
    `accel.restore(model)` before training it)."""
    model = model.to(device=device, dtype=dtype).eval()
    return accel.optimize(model, dtype=torch.bfloat16 if dtype == torch.bfloat16 else None) if fast else model


def model_from_state_dict(sd: dict[str, torch.Tensor], cfg: GitConfig) -> GIT:
    """GIT(cfg) holding exactly the tensors of `sd` (our names, every key, strict), built on the meta
    device so that no random init runs: every tensor comes from the file."""
    with torch.device("meta"):
        model = GIT(cfg)
    if cfg.tie_embeddings:
        sd = sd | {"lm_head.weight": sd["embed.word.weight"]}
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_embeddings:  # assign=True gave the two names separate Parameters; share one again
        model.lm_head.weight = model.embed.word.weight
    return model


def listed(keys: list[str]) -> str:
    """At most MAX_LISTED names, so a config of the wrong size gives a readable line."""
    listed = ", ".join(keys[:MAX_LISTED])
    return listed if len(keys) <= MAX_LISTED else f"{listed} and {len(keys) - MAX_LISTED} more"


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: GitConfig) -> dict[str, torch.Tensor]:
    """Our tensors -> HF's, fused tensors split back along dim 0 (contiguous, ready to save)."""
    hf_sd = {}
    for hf_keys, key in expanded_key_map(cfg):
        for h, part in zip(hf_keys, sd[key].chunk(len(hf_keys))):
            hf_sd[h] = part.contiguous()
    return hf_sd


@functools.lru_cache(maxsize=8)
def expected_shapes(cfg: GitConfig) -> dict[str, tuple[int, ...]]:
    """Our key -> shape for this config (a model on the meta device; cached, do not mutate)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GIT(cfg).state_dict().items()}


def _modern_name(key: str) -> str:
    for old, new in LEGACY_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _hf_shape(shape: tuple[int, ...], parts: int) -> tuple[int, ...]:
    return (shape[0] // parts, *shape[1:])


def check_official_layout(model: GIT) -> None:
    """Refuse a model whose tensors are not exactly GIT's, such as one with a changed decoder or
    tower (docs/extending.md): the layout has no names for the rest, and saving only what
    fits would write a different model without a word."""
    expected = expected_shapes(model.cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    extra, missing = sorted(set(ours) - set(expected)), sorted(set(expected) - set(ours))
    reshaped = sorted(k for k in set(ours) & set(expected) if ours[k] != expected[k])
    problems = ([f"no place for {listed(extra)}"] if extra else []) + ([f"lacks {listed(missing)}"] if missing else []) \
        + ([f"other shapes for {listed(reshaped)}"] if reshaped else [])
    if problems:
        raise ValueError(f"the model does not fit the official GIT layout ({', '.join(problems)}); save a changed "
                         "model with git_scratch.save_variant(model, path, 'package.module:function'), or train it "
                         "with train(..., builder='package.module:function') (docs/extending.md)")
