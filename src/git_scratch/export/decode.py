"""An exported model decoded by generation's own loops: only the step functions differ.

`generate` and `answer` (generation/search.py) reach a model through a `Runtime`; ONNX_RUNTIME's
functions run the two ONNX Runtime sessions (runtime.py) where prefix.py's run the PyTorch
blocks, so greedy, sampling, beam search, the processors and answer() are the same code:

    model = load_onnx("out/")
    ids = model.generate(pixel_values, num_beams=3)       # search.generate(model, ..., runtime=ONNX_RUNTIME)

The cache is the text-step graph's: every layer's keys and values grow by concatenation, P image
plus text slots so far, and the mask over the whole length is built once per call (as in prefix.py)
and sliced to (R, 1, S, P + S) per step.

Letters: R rows, T0 prompt length, T = T0 + max_new_tokens, N image tokens, S tokens in one call, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import GitConfig
from ..generation.prefix import ImagePrefix
from ..generation.search import Runtime, answer, generate
from ..model.git import text_positions
from ..model.mask import git_attention_mask
from .runtime import ExportedModel, open_export


@dataclass
class OnnxGIT:
    """What `generate`'s `model` is under ONNX_RUNTIME: the sessions and the exported config."""

    exported: ExportedModel
    cfg: GitConfig

    def generate(self, pixel_values: torch.Tensor | None, input_ids: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return generate(self, pixel_values, input_ids, attention_mask, runtime=ONNX_RUNTIME, **kwargs)

    def answer(self, pixel_values: torch.Tensor, questions: list[list[int]], **kwargs: Any) -> torch.Tensor:
        return answer(self, pixel_values, questions, runtime=ONNX_RUNTIME, **kwargs)


@dataclass
class OnnxState:
    cache: list[np.ndarray]  # keys.0, values.0, ... (R, H, P, Dh), P = the slots written so far
    mask: torch.Tensor  # (R, 1, N + T, N + T), built once per call
    positions: torch.Tensor  # (R, T) text positions counting real tokens only
    n_image: int


def load_onnx(directory: str | Path) -> OnnxGIT:
    exported = open_export(directory)
    return OnnxGIT(exported, GitConfig.from_dict(exported.description["config"], source=str(Path(directory) / "export.json")))


def encode_prefix(model: OnnxGIT, pixel_values: torch.Tensor, room: int = 0) -> ImagePrefix:
    """prefix.py's encode_prefix over the image graph. `room` is ignored: prefill copies into numpy caches."""
    arrays = model.exported.encode_image(pixel_values.detach().cpu().numpy())
    tensors = [torch.from_numpy(a) for a in arrays]
    return ImagePrefix(tuple(tensors[0::2]), tuple(tensors[1::2]))


def empty_prefix(model: OnnxGIT) -> ImagePrefix:
    cfg = model.cfg
    empty = torch.zeros(1, cfg.n_head, 0, cfg.head_dim, dtype=torch.from_numpy(np.zeros(0, model.exported.float_type)).dtype)
    return ImagePrefix((empty,) * cfg.n_layer, (empty,) * cfg.n_layer)


def prefill(model: OnnxGIT, prefix: ImagePrefix, image_index: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor, max_new_tokens: int) -> tuple[OnnxState, torch.Tensor]:
    """prefix.py's prefill over the sessions: rows copy their image's keys and values, then the prompt runs."""
    rows = input_ids.shape[0]
    generated = torch.ones(rows, max_new_tokens, dtype=torch.bool)
    text_mask = torch.cat([attention_mask.bool().cpu(), generated], dim=1)  # (R, T)
    index = image_index.cpu()
    cache = [tensor[index].numpy() for pair in zip(prefix.keys, prefix.values) for tensor in pair]
    state = OnnxState(cache, git_attention_mask(prefix.n_tokens, text_mask), text_positions(text_mask), prefix.n_tokens)
    return state, decode_step(model, state, input_ids, 0)


def decode_step(model: OnnxGIT, state: OnnxState, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """Text tokens (R, S) at text positions start..start+S-1 -> logits (R, V) of the last one."""
    n, width = state.n_image, input_ids.shape[1]
    end = n + start + width
    mask = state.mask[:, :, n + start:end, :end]  # (R, 1, S, P + S): the keys written so far and these
    positions = state.positions[:, start:start + width]  # (R, S)
    logits, state.cache = model.exported.text_step(input_ids.cpu().numpy(), positions.numpy(), mask.numpy(), state.cache)
    return torch.from_numpy(logits[:, -1])


def reorder_beams(state: OnnxState, rows: torch.Tensor, n_text: int) -> None:
    """Beams moved between rows: the cache follows (image slots too, equal across one image's beams)."""
    index = rows.cpu().numpy()
    state.cache = [tensor[index] for tensor in state.cache]


def cpu_device(model: OnnxGIT) -> torch.device:
    return torch.device("cpu")  # the tensors around the sessions; the sessions pick their own provider


ONNX_RUNTIME = Runtime(encode_prefix, empty_prefix, prefill, decode_step, reorder_beams, device=cpu_device)
