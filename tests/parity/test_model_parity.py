"""Stage-by-stage parity with transformers.GitForCausalLM, loaded through our converter.

Every stage (vision tokens, projected tokens, each decoder layer, logits, loss) must agree to
1e-5 in fp32. In fp64 the two implementations agree to 1e-10 even at a large init, which shows
the fp32 differences are rounding, not math (docs/parity.md).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from git_scratch import GIT, accel, git_loss
from tests.conftest import hf_tiny, save_hf

pytestmark = pytest.mark.parity

CASES: dict[str, dict[str, Any]] = {
    "image": {},
    "video": {"num_image_with_embedding": 3},
    "tied": {"tie_word_embeddings": True},
    "gelu_new+eps": {"hidden_act": "gelu_new", "layer_norm_eps": 1e-7,
                     "vision_config": {"hidden_act": "gelu", "layer_norm_eps": 1e-6}},
    "relu": {"hidden_act": "relu", "vision_config": {"hidden_act": "gelu_new"}},
}


def capture(model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Forward hooks that record each module's output (first element of a tuple) under a name."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_m, inputs, output):
            seen[name] = output[0] if isinstance(output, tuple) else output
            seen[name + ".input"] = inputs[0]
        return record

    for name, module in modules.items():
        module.register_forward_hook(hook(name))
    return seen


def hf_stages(hf) -> dict[str, torch.nn.Module]:
    return {"projection": hf.git.visual_projection,
            **{f"layer{i}": layer for i, layer in enumerate(hf.git.encoder.layer)}}


def our_stages(ours: GIT) -> dict[str, torch.nn.Module]:
    return {"projection": ours.image_proj, **{f"layer{i}": b for i, b in enumerate(ours.blocks)}}


def inputs(hf, batch: int = 2, n_text: int = 7, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames = hf.config.num_image_with_embedding
    shape = (batch, frames, 3, size, size) if frames else (batch, 3, size, size)
    pixel_values = torch.randn(shape)
    input_ids = torch.randint(3, hf.config.vocab_size, (batch, n_text))
    input_ids[:, 0] = hf.config.bos_token_id
    labels = input_ids.clone()
    labels[:, :2] = -100  # a question prefix that is not learned
    return pixel_values, input_ids, labels


@pytest.mark.parametrize("case", list(CASES))
def test_stage_by_stage_fp32(case: str, tmp_path) -> None:
    torch.manual_seed(1)
    hf = hf_tiny(**CASES[case])
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / case))
    pixel_values, input_ids, labels = inputs(hf)
    theirs_seen, ours_seen = capture(hf, hf_stages(hf)), capture(ours, our_stages(ours))
    with torch.no_grad():
        out = hf(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
        logits = ours(pixel_values, input_ids)
    n_image = ours_seen["projection"].shape[1]
    assert n_image == out.logits.shape[1] - input_ids.shape[1]
    for name in ("projection.input", "projection", *[f"layer{i}" for i in range(len(ours.blocks))]):
        torch.testing.assert_close(ours_seen[name], theirs_seen[name], atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(logits, out.logits[:, n_image:], atol=1e-5, rtol=0)
    torch.testing.assert_close(git_loss(logits, labels), out.loss, atol=1e-5, rtol=0)
    # The test means something only if the outputs are far from uniform.
    assert logits.softmax(-1).max() > 0.2


def test_fp64_agrees_to_rounding(tmp_path) -> None:
    """At a large init, fp32 rounding alone moves logits by ~1e-4; in fp64 the math is identical."""
    torch.manual_seed(2)
    hf = hf_tiny(initializer_range=0.5, vision_config={"initializer_range": 0.5})
    # HF's eager vision attention upcasts its softmax to fp32 on purpose; SDPA keeps fp64.
    hf.git.image_encoder.config._attn_implementation = "sdpa"
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck")).double()
    hf.double()
    pixel_values, input_ids, _ = inputs(hf)
    with torch.no_grad():
        theirs = hf(pixel_values=pixel_values.double(), input_ids=input_ids).logits[:, -input_ids.shape[1]:]
        logits = ours(pixel_values.double(), input_ids)
    torch.testing.assert_close(logits, theirs, atol=1e-10, rtol=0)


def test_left_padded_batch_matches_rows_alone(tmp_path) -> None:
    torch.manual_seed(3)
    hf = hf_tiny()
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    pixel_values, input_ids, _ = inputs(hf, batch=3, n_text=6)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # row 0: 3 pads then a 3-token prompt
    attention_mask[1, :1] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    # transformers counts positions over real tokens only when given position_ids, as its generate does.
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    with torch.no_grad():
        theirs = hf(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids).logits[:, -6:]
        logits = ours(pixel_values, input_ids, attention_mask)
        real = attention_mask.bool()
        torch.testing.assert_close(logits[real], theirs[real], atol=1e-5, rtol=0)
        for row in range(3):
            alone = ours(pixel_values[row:row + 1], input_ids[row:row + 1, real[row]])
            torch.testing.assert_close(logits[row, real[row]], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(48, 48), (40, 56)])
def test_other_resolution_interpolates_positions(size: tuple[int, int], tmp_path) -> None:
    torch.manual_seed(4)
    hf = hf_tiny()
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    pixel_values = torch.randn(2, 3, *size)
    input_ids = torch.randint(3, 99, (2, 5))
    with torch.no_grad():
        theirs = hf(pixel_values=pixel_values, input_ids=input_ids, interpolate_pos_encoding=True).logits
        logits = ours(pixel_values, input_ids)
    n_image = (size[0] // 8) * (size[1] // 8) + 1
    assert theirs.shape[1] == n_image + 5
    torch.testing.assert_close(logits, theirs[:, n_image:], atol=1e-5, rtol=0)


def test_loaded_model_has_the_kernels_the_run_asks_for(kernels: str, tmp_path) -> None:
    ours = GIT.from_pretrained(save_hf(hf_tiny(), tmp_path / "ck"))
    assert accel.is_optimized(ours) == (kernels == "accel")
