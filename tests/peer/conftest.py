"""The peer suite: transformers' own GIT tests (tests/models/git/ and the mixins they inherit),
re-written against git_scratch. docs/parity.md lists every upstream test and where it went.

Each test builds a `transformers.GitForCausalLM` with random weights from upstream's
`GitModelTester` sizes (below), saves it with `save_pretrained`, loads it with
`git_scratch.load` and runs both on the same inputs. Upstream inputs are drawn the same way:
uniform token ids over the whole vocabulary, a random 0/1 text mask whose first column is 1,
and uniform [0, 1) pixels. Models load as `git_scratch.load` gives them (accel's kernels);
tests/parity/ covers plain layers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import git_scratch
from git_scratch import GIT

transformers = pytest.importorskip("transformers", reason="the peer suite needs the test extra: pip install -e '.[test]'")

# GitModelTester's sizes. BOS, EOS and PAD all sit at vocab_size - 1, as upstream puts them.
BATCH, TEXT_LEN, VOCAB = 13, 7, 99
IMAGE_SIZE, PATCH, CHANNELS = 32, 16, 3
N_IMAGE = (IMAGE_SIZE // PATCH) ** 2 + 1  # 4 patches + CLS
TESTER: dict[str, Any] = {
    "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512, "initializer_range": 0.02,
    "bos_token_id": VOCAB - 1, "eos_token_id": VOCAB - 1, "pad_token_id": VOCAB - 1,
    "vision_config": {"num_channels": CHANNELS, "image_size": IMAGE_SIZE, "patch_size": PATCH, "hidden_size": 32,
                      "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 4},
}


def tester_config(**overrides: Any) -> Any:
    """transformers.GitConfig at the tester's sizes; `vision_config` overrides merge into the tester's."""
    kwargs = {**TESTER, **overrides}
    kwargs["vision_config"] = {**TESTER["vision_config"], **overrides.get("vision_config", {})}
    return transformers.GitConfig(**kwargs)


def hf_model(seed: int = 0, **overrides: Any) -> Any:
    torch.manual_seed(seed)
    return transformers.GitForCausalLM(tester_config(**overrides)).eval()


def load_ours(hf: Any, directory: Path) -> GIT:
    hf.save_pretrained(directory)
    return git_scratch.load(directory)


@dataclass
class Inputs:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), holes anywhere, first column 1
    pixel_values: torch.Tensor  # (B, 3, H, W)

    def rows(self, n: int) -> Inputs:
        return Inputs(self.input_ids[:n], self.attention_mask[:n], self.pixel_values[:n])


def upstream_inputs(seed: int = 0, batch: int = BATCH, text_len: int = TEXT_LEN, size: int = IMAGE_SIZE) -> Inputs:
    """Drawn as upstream's ids_tensor / random_attention_mask / floats_tensor draw them."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (batch, text_len), generator=gen)
    mask = torch.randint(0, 2, (batch, text_len), generator=gen)
    mask[:, 0] = 1  # upstream keeps one real token per row
    pixel_values = torch.rand((batch, CHANNELS, size, size), generator=gen)
    return Inputs(input_ids, mask, pixel_values)


def left_padded(inputs: Inputs) -> Inputs:
    """The same real tokens per row, moved to the right end behind pad ids: the only padding
    git_scratch's generate accepts (it refuses holes in a prompt with a ValueError)."""
    ids = torch.full_like(inputs.input_ids, VOCAB - 1)
    mask = torch.zeros_like(inputs.attention_mask)
    for row in range(len(ids)):
        real = inputs.input_ids[row][inputs.attention_mask[row].bool()]
        ids[row, ids.shape[1] - len(real):] = real
        mask[row, ids.shape[1] - len(real):] = 1
    return Inputs(ids, mask, inputs.pixel_values)


def counted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Text positions that count real tokens only (git_scratch's rule; a pad repeats its
    predecessor's position, 0 at the start). Given to transformers as position_ids, they make
    both models compute the same function of a mask with holes."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_block_output(model: GIT) -> tuple[dict[str, torch.Tensor], Any]:
    """A hook that keeps our last decoder block's output (B, N + T, D): GitModel's last_hidden_state."""
    seen: dict[str, torch.Tensor] = {}
    handle = model.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    return seen, handle


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, GIT]:
    """(transformers model, ours) at the tester's sizes, seed 0."""
    hf = hf_model(0)
    return hf, load_ours(hf, tmp_path_factory.mktemp("tester"))


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    return upstream_inputs(0)
