"""Model behaviour that needs no reference implementation: packing and gradient checkpointing."""

from __future__ import annotations

import torch

from git_scratch import GIT, git_loss
from git_scratch.generation.prefix import decode_step, encode_prefix, prefill
from tests.conftest import tiny_config


def test_packed_texts_equal_texts_alone() -> None:
    """[image ; text 1 ; text 2] with segment ids gives each text the logits it gets alone."""
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    first, second = torch.tensor([[1, 5, 6, 7]]), torch.tensor([[1, 8, 9]])
    packed = torch.cat([first, second, torch.zeros(1, 2, dtype=torch.long)], dim=1)
    segments = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0, 0]])
    with torch.no_grad():
        logits = model(pixel_values, packed, (segments > 0).long(), segment_ids=segments)
        torch.testing.assert_close(logits[:, :4], model(pixel_values, first), atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[:, 4:7], model(pixel_values, second), atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(dropout=0.1, attn_dropout=0.1)).train()
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 6))

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)  # same dropout masks in both runs
        git_loss(model(pixel_values, input_ids), input_ids).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


class HiddenPatch(GIT):
    """A variant whose mask hides image token 1 from the text and from the CLS token."""

    def attention_mask(self, n_image: int, text_mask: torch.Tensor,
                       segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        mask = super().attention_mask(n_image, text_mask, segment_ids).clone()
        mask[:, :, n_image:, 1] = False  # text rows
        mask[:, :, 0, 1] = False  # an image row: the cached prefix must honour it too
        return mask


def test_the_mask_is_one_hook_that_forward_and_generation_both_use() -> None:
    torch.manual_seed(0)
    plain = GIT(tiny_config(init_std=0.3)).eval()
    variant = HiddenPatch(plain.cfg).eval()
    variant.load_state_dict(plain.state_dict())
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        full = variant(pixel_values, input_ids)  # (2, 6, V)
        assert not torch.allclose(full, plain(pixel_values, input_ids), atol=1e-3)  # the hook changed the numbers
        prefix = encode_prefix(variant, pixel_values)  # the image rows under the variant's mask
        state, logits = prefill(variant, prefix, torch.arange(2), input_ids[:, :3], torch.ones(2, 3), 3)
        steps = [logits] + [decode_step(variant, state, input_ids[:, t:t + 1], t) for t in range(3, 6)]
    for i, logits in enumerate(steps):  # the cache reproduces the full pass under the same mask
        torch.testing.assert_close(logits, full[:, 2 + i], atol=1e-5, rtol=0)
