"""output_hidden_states / output_attentions against transformers, and position_ids against its
plain forward: every field of GitOutput within 1e-5 of GitForCausalLM's (eager attention, which
returns its probabilities) and of its image encoder's, in fp32, with accel's kernels and without."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from git_scratch import GIT
from tests.conftest import hf_tiny, save_hf

pytestmark = pytest.mark.parity

CASES: dict[str, dict[str, Any]] = {
    "image": {},
    "video": {"num_image_with_embedding": 3},
    "tied": {"tie_word_embeddings": True},
}


def models(tmp_path, **overrides: Any):
    torch.manual_seed(7)
    hf = hf_tiny(attn_implementation="eager", **overrides)
    return hf, GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))


def theirs(hf, pixel_values: torch.Tensor | None, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    """transformers' fields under GitOutput's names. Its GitModel encodes a video frame by frame and
    returns no vision states, so they come from its image encoder, frame by frame, flattened (b f)."""
    with torch.no_grad():
        out = hf(pixel_values=pixel_values, input_ids=input_ids, output_hidden_states=True,
                 output_attentions=True, **kwargs)
        fields = {"logits": out.logits[:, -input_ids.shape[1]:], "hidden_states": out.hidden_states,
                  "attentions": out.attentions, "vision_hidden_states": None, "vision_attentions": None}
        if pixel_values is None:
            return fields
        frames = [pixel_values] if pixel_values.ndim == 4 else list(pixel_values.unbind(1))
        vision = [hf.git.image_encoder(f, output_hidden_states=True, output_attentions=True) for f in frames]
    for name in ("hidden_states", "attentions"):
        per_layer = zip(*(getattr(v, name) for v in vision))  # each layer: one tensor per frame
        fields["vision_" + name] = tuple(torch.stack(layer, 1).flatten(0, 1) for layer in per_layer)
    return fields


def assert_fields_close(ours, expected: dict[str, Any], text_rows: torch.Tensor | None = None) -> None:
    """Every field within 1e-5; with `text_rows` (B, T) boolean, the decoder's text positions only
    where it is True (its image positions always)."""
    for name, value in expected.items():
        mine = getattr(ours, name)
        if value is None:
            assert mine is None, name
            continue
        value = value if isinstance(value, tuple) else (value,)
        mine = mine if isinstance(mine, tuple) else (mine,)
        assert len(mine) == len(value), name
        for i, (a, b) in enumerate(zip(mine, value)):
            if text_rows is not None and name != "logits" and not name.startswith("vision"):
                keep = torch.cat([text_rows.new_ones(a.shape[0], a.shape[-2] - text_rows.shape[1]), text_rows], 1)
                a, b = (t.transpose(1, -2)[keep] if name == "attentions" else t[keep] for t in (a, b))
            elif text_rows is not None and name == "logits":
                a, b = a[text_rows], b[text_rows]
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, at=f"{name}[{i}]": f"{at}: {m}")


def inputs(hf, batch: int = 2, n_text: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    frames = hf.config.num_image_with_embedding
    pixel_values = torch.randn((batch, frames, 3, 32, 32) if frames else (batch, 3, 32, 32))
    input_ids = torch.randint(3, hf.config.vocab_size, (batch, n_text))
    input_ids[:, 0] = hf.config.bos_token_id
    return pixel_values, input_ids


@pytest.mark.parametrize("case", list(CASES))
def test_every_field_equals_transformers(case: str, tmp_path) -> None:
    hf, ours = models(tmp_path, **CASES[case])
    pixel_values, input_ids = inputs(hf)
    with torch.no_grad():
        out = ours(pixel_values, input_ids, output_hidden_states=True, output_attentions=True)
    assert_fields_close(out, theirs(hf, pixel_values, input_ids))
    assert out.logits.softmax(-1).max() > 0.1  # ten times uniform (1/99): a wrong weight could not hide
    assert max(a.max() for a in out.attentions) > 0.5  # and so are the attention probabilities


def left_padded(input_ids: torch.Tensor) -> torch.Tensor:
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0
    attention_mask[1, :1] = 0
    return attention_mask


@pytest.mark.parametrize("image", [True, False], ids=["image", "text-only"])
def test_left_padded_fields_equal_transformers_given_our_positions(image: bool, tmp_path) -> None:
    """Ours count real tokens; transformers is handed the same positions (pads at 0). With an image
    every position agrees, pads included (a pad sees the image); in text alone a leading pad may see
    no key at all, a row neither implementation gives a meaning, so the real tokens are compared."""
    hf, ours = models(tmp_path)
    pixel_values, input_ids = inputs(hf, batch=3)
    pixel_values = pixel_values if image else None
    attention_mask = left_padded(input_ids)
    input_ids = input_ids.masked_fill(attention_mask == 0, hf.config.pad_token_id)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = ours(pixel_values, input_ids, attention_mask, output_hidden_states=True, output_attentions=True)
    assert_fields_close(out, theirs(hf, pixel_values, input_ids, attention_mask=attention_mask,
                                    position_ids=position_ids), None if image else attention_mask.bool())


def test_text_only_fields_equal_transformers(tmp_path) -> None:
    hf, ours = models(tmp_path)
    _, input_ids = inputs(hf, batch=3)
    with torch.no_grad():
        out = ours(None, input_ids, output_hidden_states=True, output_attentions=True)
    assert out.hidden_states[0].shape == (3, 6, hf.config.hidden_size)
    assert_fields_close(out, theirs(hf, None, input_ids))


MASKS = {
    "left-padded": [[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]],
    "holey": [[1, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 0]],
}


@pytest.mark.parametrize("image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_arange_positions_equal_transformers_plain_forward(mask: str, image: bool, tmp_path) -> None:
    """transformers' forward without position_ids counts 0..T-1 whatever the mask; ours, given
    torch.arange(T), must agree on the real tokens (and on every field there), and differs without it."""
    hf, ours = models(tmp_path)
    pixel_values, input_ids = inputs(hf, batch=3)
    pixel_values = pixel_values if image else None
    attention_mask = torch.tensor(MASKS[mask])
    real = attention_mask.bool()
    with torch.no_grad():
        out = ours(pixel_values, input_ids, attention_mask, position_ids=torch.arange(6),
                   output_hidden_states=True, output_attentions=True)
        ours_default = ours(pixel_values, input_ids, attention_mask)
    expected = theirs(hf, pixel_values, input_ids, attention_mask=attention_mask)
    assert_fields_close(out, expected, text_rows=real)
    assert not torch.allclose(ours_default[real], expected["logits"][real], atol=1e-3)
