"""Shared fixtures: tiny configs, and random-weight transformers checkpoints in the official layout.

No download anywhere: a test that needs "an official checkpoint" builds a tiny random
`transformers.GitForCausalLM`, saves it with `save_pretrained(safe_serialization=True)` (the
exact file layout of microsoft/git-*) and loads it back through our real loader.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from git_scratch import GitConfig, VisionConfig

# Small enough for milliseconds per forward, odd enough to catch transposes: every width differs.
TINY_HF: dict[str, Any] = dict(
    vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    # Large enough that softmaxes are far from uniform and a wrong weight cannot hide; small
    # enough that fp32 rounding stays under 1e-5 (docs/parity.md measures this).
    initializer_range=0.2,
    vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8, initializer_range=0.2),
)


def tiny_config(**overrides: Any) -> GitConfig:
    vision = VisionConfig(image_size=32, patch_size=8, d_model=32, n_layer=2, n_head=4, d_ff=37)
    base = GitConfig(vocab_size=99, d_model=48, n_layer=2, n_head=4, d_ff=64, max_positions=64,
                     bos_id=1, eos_id=2, pad_id=0, init_std=0.2, vision=vision)
    return base.replace(**overrides)


def hf_tiny(**overrides: Any):
    """A random transformers GitForCausalLM; `vision_config` overrides merge into TINY_HF's."""
    transformers = pytest.importorskip("transformers")
    kwargs = {**TINY_HF, **overrides}
    kwargs["vision_config"] = {**TINY_HF["vision_config"], **overrides.get("vision_config", {})}
    model = transformers.GitForCausalLM(transformers.GitConfig(**kwargs)).eval()
    if getattr(model.git, "img_temporal_embedding", None) is not None:
        # HF initialises temporal embeddings at zero; random ones make a frame mix-up visible.
        with torch.no_grad():
            for p in model.git.img_temporal_embedding:
                p.normal_(std=0.5)
    return model


def save_hf(model: Any, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def tiny_cfg() -> GitConfig:
    return tiny_config()


@pytest.fixture
def hf_checkpoint(tmp_path: Path):
    """(hf_model, directory) for the default tiny image config."""
    torch.manual_seed(0)
    model = hf_tiny()
    return model, save_hf(model, tmp_path / "hf")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """scripts/bench.py loaded as a module (tests/scripts, tests/cuda): it is a script, not a package."""
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench"]
