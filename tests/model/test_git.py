"""Model behaviour that needs no reference implementation: packing and gradient checkpointing."""

from __future__ import annotations

import torch

from git_scratch import GIT, git_loss
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
