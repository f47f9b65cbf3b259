"""GIT.forward's output_hidden_states / output_attentions and position_ids, without a reference
implementation: shapes, the fields left None, a fast path that asking does not change, and the
errors. The values themselves are compared with transformers in tests/parity/test_outputs_parity.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from git_scratch import GIT, accel
from git_scratch.model import decoder, outputs
from git_scratch.model.decoder import Attention
from git_scratch.model.outputs import GitOutput
from tests.conftest import tiny_config

FLAGS = [{"output_hidden_states": True}, {"output_attentions": True},
         {"output_hidden_states": True, "output_attentions": True}]


def model_of(**overrides: Any) -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config(**overrides)).eval()


def no_hooks_left(model: GIT) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()) and \
        all(block.attn.weights is None for block in model.blocks)


def test_shapes_for_images() -> None:
    model = model_of()
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 5))
    with torch.no_grad():
        out = model(pixel_values, input_ids, output_hidden_states=True, output_attentions=True)
    assert isinstance(out, GitOutput) and out.logits.shape == (2, 5, 99)
    n = 17  # 4 x 4 patches + CLS
    assert [h.shape for h in out.hidden_states] == [(2, n + 5, 48)] * 3  # decoder n_layer + 1
    assert [a.shape for a in out.attentions] == [(2, 4, n + 5, n + 5)] * 2
    assert [h.shape for h in out.vision_hidden_states] == [(2, n, 32)] * 3  # vision n_layer + 1
    assert [a.shape for a in out.vision_attentions] == [(2, 4, n, n)] * 2
    for probs in (*out.attentions, *out.vision_attentions):
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert no_hooks_left(model)


def test_shapes_for_video_hold_the_frames_flattened() -> None:
    model = model_of(n_frames=3)
    pixel_values, input_ids = torch.randn(2, 3, 3, 32, 32), torch.randint(3, 99, (2, 4))
    with torch.no_grad():
        out = model(pixel_values, input_ids, output_hidden_states=True, output_attentions=True)
        first_frames = model(pixel_values[:, 0], input_ids, output_hidden_states=True)  # the ViT alone per frame
    assert out.hidden_states[0].shape == (2, 3 * 17 + 4, 48)
    assert out.vision_hidden_states[0].shape == (6, 17, 32) and out.vision_attentions[0].shape == (6, 4, 17, 17)
    for ours, alone in zip(out.vision_hidden_states, first_frames.vision_hidden_states):
        torch.testing.assert_close(ours[0::3], alone, atol=1e-6, rtol=0)  # row b * F + 0: frame 0 of video b


def test_text_alone_has_no_vision_fields() -> None:
    model = model_of()
    input_ids = torch.randint(3, 99, (2, 5))
    with torch.no_grad():
        out = model(None, input_ids, output_hidden_states=True, output_attentions=True)
    assert [h.shape for h in out.hidden_states] == [(2, 5, 48)] * 3
    assert [a.shape for a in out.attentions] == [(2, 4, 5, 5)] * 2
    assert out.vision_hidden_states is None and out.vision_attentions is None


def test_fields_not_asked_for_are_none() -> None:
    model = model_of()
    pixel_values, input_ids = torch.randn(1, 3, 32, 32), torch.randint(3, 99, (1, 4))
    with torch.no_grad():
        hidden = model(pixel_values, input_ids, output_hidden_states=True)
        attention = model(pixel_values, input_ids, output_attentions=True)
    assert hidden.attentions is None and hidden.vision_attentions is None
    assert hidden.hidden_states is not None and hidden.vision_hidden_states is not None
    assert attention.hidden_states is None and attention.vision_hidden_states is None
    assert attention.attentions is not None and attention.vision_attentions is not None


@pytest.mark.parametrize("kernels", ["accel", "plain"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_asking_changes_no_logit_bit(kernels: str, training: bool) -> None:
    """The flags record around the fast path: same logits to the bit, with accel's kernels and
    without, and in training with dropout too (recording draws nothing from the random stream)."""
    model = model_of(dropout=0.1, attn_dropout=0.1)
    model.vision.vit.transformer.resblocks[0].attn.dropout = 0.1
    if kernels == "accel":
        accel.optimize(model)
    model.train(training)
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 6))
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])

    def run(**flags: bool) -> torch.Tensor:
        torch.manual_seed(1)
        out = model(pixel_values, input_ids, attention_mask, **flags)
        return out if isinstance(out, torch.Tensor) else out.logits

    plain = run()
    for flags in FLAGS:
        assert torch.equal(run(**flags), plain), flags
    assert no_hooks_left(model)


def test_no_probabilities_are_computed_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> torch.Tensor:
        raise AssertionError("attention probabilities computed")

    monkeypatch.setattr(decoder, "attention_probabilities", refuse)
    monkeypatch.setattr(outputs, "attention_probabilities", refuse)
    model = model_of()
    pixel_values, input_ids = torch.randn(1, 3, 32, 32), torch.randint(3, 99, (1, 4))
    with torch.no_grad():
        assert isinstance(model(pixel_values, input_ids), torch.Tensor)
        model(pixel_values, input_ids, output_hidden_states=True)
        with pytest.raises(AssertionError, match="probabilities computed"):
            model(pixel_values, input_ids, output_attentions=True)
    assert no_hooks_left(model)  # removed on the way out of a failed call too


def test_another_tower_records_the_decoder_only() -> None:
    class Tower(nn.Module):  # any module from pixels to (B, n, D_vis) tokens
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 16, stride=16)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.conv(pixel_values).flatten(2).transpose(1, 2)  # (B, 4, 32)

    model = model_of()
    model.vision = Tower()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), torch.randint(3, 99, (1, 4)),
                    output_hidden_states=True, output_attentions=True)
    assert out.hidden_states[0].shape == (1, 8, 48) and out.attentions[0].shape == (1, 4, 8, 8)
    assert out.vision_hidden_states is None and out.vision_attentions is None


def test_an_attention_that_records_nothing_is_named() -> None:
    class Silent(Attention):
        def forward(self, x: torch.Tensor, mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> torch.Tensor:
            q, k, v = self.heads(x, None)
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.out(y.transpose(1, 2).flatten(2))

    model = model_of()
    model.blocks[1].attn = Silent(model.cfg)
    with torch.no_grad(), pytest.raises(ValueError, match="decoder layer 1 recorded 0 attention maps"):
        model(None, torch.randint(3, 99, (1, 4)), output_attentions=True)


def test_position_ids_of_one_row_serve_every_row() -> None:
    model = model_of()
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 5))
    positions = torch.tensor([3, 1, 4, 1, 5])
    with torch.no_grad():
        full = model(pixel_values, input_ids, position_ids=positions.expand(2, 5))
        assert torch.equal(model(pixel_values, input_ids, position_ids=positions), full)
        assert torch.equal(model(pixel_values, input_ids, position_ids=positions[None]), full)
        assert not torch.allclose(model(pixel_values, input_ids), full)  # positions do reach the embedding


@pytest.mark.parametrize(("position_ids", "message"), [
    (torch.arange(5.0), "position_ids is torch.float32; pass integer positions"),
    (torch.ones(5, dtype=torch.bool), "position_ids is torch.bool; pass integer positions"),
    ([0, 1, 2, 3, 4], "position_ids is list; pass integer positions"),
    (torch.arange(6), r"position_ids has shape \(6,\) but input_ids has \(2, 5\)"),
    (torch.zeros(3, 5, dtype=torch.long), r"position_ids has shape \(3, 5\)"),
    (torch.zeros(1, 2, 5, dtype=torch.long), r"position_ids has shape \(1, 2, 5\)"),
    (torch.tensor([0, 1, 2, 3, 64]), "values from 0 to 64 but the model has 64 text positions; keep them in 0..63"),
    (torch.tensor([-1, 0, 1, 2, 3]), "values from -1 to 3"),
])
def test_bad_position_ids_fail_in_one_line(position_ids: Any, message: str) -> None:
    model = model_of()
    with pytest.raises(ValueError, match=message) as error:
        model(None, torch.randint(3, 99, (2, 5)), position_ids=position_ids)
    assert "\n" not in str(error.value)
