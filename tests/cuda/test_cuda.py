"""On a CUDA device: parity with transformers in fp32, bf16 tokens against fp32's, and the
compiled model's tokens against the eager model's. Every test is marked cuda and skipped
without a device; scripts/gpu_check.sh runs them (with `pytest -m cuda`) on a lent GPU.

The CPU tests hold the same checks (tests/parity at 1e-5, tests/accel for bf16, int8 and
compile); here they run through CUDA's kernels: cuBLAS products, SDPA's flash and efficient
attention, inductor's Triton code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from git_scratch import GIT, accel, git_loss
from tests.conftest import hf_tiny, save_hf

pytest.importorskip("transformers", reason="the CUDA checks compare with transformers: pip install -e '.[test]'")

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 products in fp32: cuDNN's convolutions (the patch embedding) default to TF32, whose
    10-bit mantissa would put 1e-3 between the two sides where the CPU tests allow 1e-5."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved




@pytest.fixture(scope="module")
def checkpoint(bench, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """(directory, pixel_values (8, 3, 32, 32) on CUDA) of bench.py's tiny shape."""
    cfg = bench.SHAPES["tiny"]()
    directory = tmp_path_factory.mktemp("bench") / "tiny"
    bench.build_checkpoint(cfg, directory, seed=0)
    return directory, bench.make_inputs(cfg, 0, CUDA).pixel_values


def greedy(model: GIT, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model.generate(pixel_values, max_new_tokens=20, return_dict_in_generate=True, output_logits=True,
                              **kwargs)


def test_fp32_parity_with_transformers_on_cuda(tmp_path: Path) -> None:
    """tests/parity/test_model_parity.py's stage check on CUDA: logits and loss within 1e-5."""
    torch.manual_seed(1)
    hf = hf_tiny()
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "hf"), device=CUDA)
    hf = hf.to(CUDA)
    pixel_values = torch.randn(2, 3, 32, 32, device=CUDA)
    input_ids = torch.randint(3, hf.config.vocab_size, (2, 7), device=CUDA)
    input_ids[:, 0] = hf.config.bos_token_id
    with torch.no_grad():
        out = hf(pixel_values=pixel_values, input_ids=input_ids, labels=input_ids)
        logits = ours(pixel_values, input_ids)
    n_image = out.logits.shape[1] - input_ids.shape[1]
    torch.testing.assert_close(logits, out.logits[:, n_image:], atol=1e-5, rtol=0)
    torch.testing.assert_close(git_loss(logits, input_ids), out.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("beams", [1, 3])
def test_fp32_tokens_equal_transformers_on_cuda(bench, checkpoint, beams: int) -> None:
    directory, pixel_values = checkpoint
    ours = bench.load_ours(directory, CUDA)
    theirs = bench.load_theirs(directory, CUDA, torch.float32)
    with torch.no_grad():
        expected = theirs.generate(pixel_values=pixel_values, max_new_tokens=20, num_beams=beams)
        got = ours.generate(pixel_values, max_new_tokens=20, num_beams=beams)
    assert torch.equal(got, expected)
    assert len(set(got[:, 1:].flatten().tolist())) > 1  # varied tokens: the check means something


def test_bf16_greedy_tokens_follow_fp32_until_a_near_tie(bench, checkpoint) -> None:
    """accel.optimize(dtype=bf16) on CUDA against the same model in fp32. bf16 may pick another
    token only where fp32's best two logits are closer than twice bf16's error (each can move by
    that error): every row must equal fp32's up to its first such step, and rows must get far
    enough before one for the check to mean something."""
    directory, pixel_values = checkpoint
    fp32 = greedy(bench.load_ours(directory, CUDA), pixel_values)
    bf16 = greedy(accel.optimize(bench.load_ours(directory, CUDA), dtype=torch.bfloat16), pixel_values)
    eos = bench.SHAPES["tiny"]().eos_id
    logits32 = torch.stack(fp32.logits, 1).float()  # (8, 20, vocab)
    logits32[..., eos] = float("-inf")  # unreachable by construction (bias -1e4)
    error = (bench.without_eos(bf16.logits[0], eos) - bench.without_eos(fp32.logits[0], eos)).abs().max()
    assert error > 0  # bf16 really ran
    best = logits32.topk(2, dim=-1).values  # (8, 20, 2)
    tie = (best[..., 0] - best[..., 1]) < 2 * error  # (8, 20)
    until = torch.where(tie.any(1), tie.float().argmax(1), torch.full((8,), 20))  # (8,) first near tie
    new32, new16 = fp32.sequences[:, 1:], bf16.sequences[:, 1:]  # (8, 20)
    for row in range(8):
        assert torch.equal(new16[row, :until[row]], new32[row, :until[row]]), (row, int(until[row]))
    assert until.float().mean() >= 3, until


@pytest.mark.parametrize("beams", [1, 3])
def test_compiled_decode_step_keeps_the_tokens(bench, checkpoint, beams: int) -> None:
    """accel.optimize(compile=True) on CUDA (inductor, Triton) gives the eager model's tokens in fp32."""
    directory, pixel_values = checkpoint
    eager = bench.load_ours(directory, CUDA)
    compiled = accel.optimize(bench.load_ours(directory, CUDA), compile=True)
    assert "torch.compile on" in accel.describe(compiled), accel.describe(compiled)
    with torch.no_grad():
        expected = eager.generate(pixel_values, max_new_tokens=20, num_beams=beams)
        for _ in range(2):  # the first call compiles; the second replays
            assert torch.equal(compiled.generate(pixel_values, max_new_tokens=20, num_beams=beams), expected)
