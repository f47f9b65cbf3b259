"""GIT's configuration: one frozen dataclass for the decoder with a nested one for the vision tower.

Field names are ours (`d_model`, `n_layer`, ...). Hugging Face's names (`hidden_size`,
`num_hidden_layers`, ...) are known only to `checkpoints/hub.py`, which reads and writes
`config.json`. Presets live in `configs/<name>.json`, one small file per published checkpoint shape.

This module imports nothing else from git_scratch but `atomic` (a stdlib-only leaf): the model
is built from it, so it sits below everything (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/, beside src/
# The activations a config may name, by their HF names; model/activations.py builds each one.
ACTIVATION_NAMES = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish")


@dataclass(frozen=True)
class VisionConfig:
    """The CLIP ViT image encoder (OpenAI-CLIP style: pre-LN blocks, CLS token, ln_pre and ln_post)."""

    image_size: int = 224  # side of the square input the position table was trained for
    patch_size: int = 16  # 16 for git-base, 14 for git-large
    d_model: int = 768  # ViT width
    n_layer: int = 12
    n_head: int = 12
    d_ff: int = 3072  # MLP hidden width (4 * d_model in every released checkpoint)
    act: str = "quick_gelu"  # OpenAI CLIP used QuickGELU, x * sigmoid(1.702 x)
    norm_eps: float = 1e-5
    attn_dropout: float = 0.0  # on the ViT's attention probabilities, in [0, 1) (training only)
    # Only for training from scratch (a checkpoint's table replaces it): 0 starts the position
    # table as GIT does, N(0, init_std); s > 0 starts it as MAE's 2-D sin-cos table times s
    # (vision.sincos_table), so even an untrained tower tells where a patch is (docs/training.md).
    position_init: float = 0.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_tokens(self) -> int:
        """Tokens per image: one per patch plus CLS."""
        return self.grid**2 + 1

    def tokens_for(self, height: int, width: int) -> int:
        """Tokens per image at another resolution (position embeddings are interpolated)."""
        return (height // self.patch_size) * (width // self.patch_size) + 1


@dataclass(frozen=True)
class GitConfig:
    """The text decoder plus the nested vision config. Defaults are microsoft/git-base."""

    vocab_size: int = 30522
    d_model: int = 768
    n_layer: int = 6
    n_head: int = 12
    d_ff: int = 3072
    act: str = "gelu"
    norm_eps: float = 1e-12  # BERT's epsilon; the vision tower uses its own
    # The text embedding's LayerNorm epsilon; None: norm_eps, as transformers has it (one epsilon for the
    # whole decoder). The original microsoft/GenerativeImage2Text uses 1e-8 there (layers/decoder.py,
    # WordAndPositionalEmbedding); checkpoints/original.py sets that. Logits move by ~2e-6 to 5e-6.
    embed_norm_eps: float | None = None
    max_positions: int = 1024  # size of the text position table
    n_frames: int | None = None  # video checkpoints: frames, each with a learned temporal embedding
    tie_embeddings: bool = False  # LM head weight shared with the word embeddings
    dropout: float = 0.1  # after embeddings and after each sublayer (training only)
    attn_dropout: float = 0.1  # on attention probabilities (training only)
    init_std: float = 0.02  # std of the normal init of linear and embedding weights
    pad_id: int = 0
    bos_id: int = 101  # [CLS] starts every prompt
    eos_id: int = 102  # [SEP] ends every caption
    vision: VisionConfig = field(default_factory=VisionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):  # built from JSON
            object.__setattr__(self, "vision", VisionConfig(**self.vision))
        validate(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_image_tokens(self) -> int:
        """Image tokens the decoder sees at the config's resolution: per frame times frames."""
        return self.vision.n_tokens * (self.n_frames or 1)

    # --- presets and our own JSON ---------------------------------------------------------

    @classmethod
    def from_name(cls, name: str) -> GitConfig:
        """A preset from `configs/NAME.json`, e.g. `GitConfig.from_name("git-base")`."""
        path = CONFIG_DIR / f"{name}.json"
        if not path.is_file():
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> GitConfig:
        """Read a config written by `save` (our field names, not HF's config.json)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
            raise ValueError(f"{path}: cannot read a git_scratch config ({e})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> GitConfig:
        if not isinstance(data, dict) or not isinstance(data.get("vision", {}), dict):
            raise ValueError(f"{source}: a git_scratch config is a JSON object with a \"vision\" object inside; "
                             "see configs/git-base.json")
        known = {f.name for f in dataclasses.fields(cls)}
        vision_known = {f.name for f in dataclasses.fields(VisionConfig)}
        unknown = set(data) - known - {"name"}
        unknown |= {f"vision.{k}" for k in set(data.get("vision", {})) - vision_known}
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
        data = {k: v for k, v in data.items() if k != "name"}
        try:
            return cls(**{**data, "vision": VisionConfig(**data.get("vision", {}))})
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path, *, force: bool = False) -> None:
        """Write our JSON (atomically); an existing file is replaced only with force=True."""
        path = Path(path)
        if path.exists() and not force:
            raise FileExistsError(f"{path} already exists; pass force=True to overwrite it")
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> GitConfig:
        return dataclasses.replace(self, **changes)


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


# Far beyond any GIT checkpoint (git-large: 24 + 6 layers, width 1024, vocab 30522), so a damaged
# config.json fails here instead of overflowing torch or building modules for hours.
MAX_LAYERS = 1024
MAX_SIZE = 1 << 20  # widths, vocabulary, positions, image side, frames


def validate(cfg: GitConfig) -> None:
    """Reject what we cannot build faithfully, naming the field and value."""
    v = cfg.vision
    sizes = {
        "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "d_ff": cfg.d_ff, "max_positions": cfg.max_positions,
        "vision.image_size": v.image_size, "vision.patch_size": v.patch_size,
        "vision.d_model": v.d_model, "vision.n_layer": v.n_layer, "vision.n_head": v.n_head,
        "vision.d_ff": v.d_ff,
    }
    for name, value in sizes.items():
        if not _is_int(value) or value <= 0:
            raise ValueError(f"config field {name} = {value!r} must be a positive integer")
        limit = MAX_LAYERS if name.endswith("n_layer") else MAX_SIZE
        if value > limit:
            raise ValueError(f"config field {name} = {value} is over {limit}, far beyond any GIT checkpoint; "
                             "the config is damaged, restore it from the original checkpoint")
    epsilons = [("norm_eps", cfg.norm_eps), ("vision.norm_eps", v.norm_eps)]
    epsilons += [("embed_norm_eps", cfg.embed_norm_eps)] if cfg.embed_norm_eps is not None else []
    for name, value in epsilons:
        if not _is_real(value) or not 0 < value < math.inf:  # NaN fails both comparisons
            raise ValueError(f"config field {name} = {value!r} must be a finite positive number")
    if not _is_real(cfg.init_std) or not 0 <= cfg.init_std < math.inf:
        raise ValueError(f"config field init_std = {cfg.init_std!r} must be a finite number >= 0")
    if cfg.d_model % cfg.n_head:
        raise ValueError(f"config field d_model = {cfg.d_model} is not divisible by n_head = {cfg.n_head}")
    if v.d_model % v.n_head:
        raise ValueError(f"config field vision.d_model = {v.d_model} is not divisible by vision.n_head = {v.n_head}")
    if not _is_real(v.position_init) or not 0 <= v.position_init < math.inf:
        raise ValueError(f"config field vision.position_init = {v.position_init!r} must be a finite number >= 0; "
                         "use 0 for GIT's random table")
    if v.position_init and v.d_model % 4:
        raise ValueError(f"config field vision.position_init = {v.position_init} needs vision.d_model divisible by 4 "
                         f"(got {v.d_model}); use 0 for GIT's random table")
    if v.patch_size > v.image_size:
        raise ValueError(f"config field vision.patch_size = {v.patch_size} is larger than "
                         f"vision.image_size = {v.image_size}")
    for name, act in (("act", cfg.act), ("vision.act", v.act)):
        if not isinstance(act, str) or act not in ACTIVATION_NAMES:
            raise ValueError(f"config field {name} = {act!r} is not supported; "
                             f"use one of {', '.join(ACTIVATION_NAMES)}")
    if cfg.n_frames is not None and (not _is_int(cfg.n_frames) or not 1 <= cfg.n_frames <= MAX_SIZE):
        raise ValueError(f"config field n_frames = {cfg.n_frames!r} must be a positive integer or null")
    if not isinstance(cfg.tie_embeddings, bool):
        raise ValueError(f"config field tie_embeddings = {cfg.tie_embeddings!r} must be true or false")
    for name, p in (("dropout", cfg.dropout), ("attn_dropout", cfg.attn_dropout),
                    ("vision.attn_dropout", v.attn_dropout)):
        if not _is_real(p) or not 0.0 <= p < 1.0:
            raise ValueError(f"config field {name} = {p!r} must be a number in [0, 1)")
    for name, tok in (("pad_id", cfg.pad_id), ("bos_id", cfg.bos_id), ("eos_id", cfg.eos_id)):
        if not _is_int(tok) or not 0 <= tok < cfg.vocab_size:
            raise ValueError(f"config field {name} = {tok!r} must be a token id in [0, vocab_size={cfg.vocab_size})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
