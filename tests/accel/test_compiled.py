"""accel's compile=True: the tower and each decoder block run through torch.compile with the tokens
of the eager model, hooks keep firing, restore uncompiles, and a missing compiler costs one warning.

Most tests compile with the "aot_eager" backend (dynamo's tracing and graph capture, what breaks
when a part does not compile, without inductor's C++ build, which took 84 s for this tiny model on
the shared machine); `test_inductor_tokens` runs inductor itself."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from git_scratch import GIT, accel, generate
from git_scratch.accel import compiled
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unsupported here")


@pytest.fixture
def model() -> GIT:
    torch.manual_seed(0)
    return GIT(tiny_config()).eval()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    monkeypatch.setattr(compiled, "unavailable", lambda device: None)
    torch._dynamo.reset()


def test_compiled_tokens_equal_eager_and_restore_uncompiles(model: GIT, traced: None) -> None:
    pixels = torch.randn(2, 3, 32, 32)
    eager = accel.optimize(copy.deepcopy(model))
    reference = generate(eager, pixels, max_new_tokens=6)
    keys = list(model.state_dict())
    accel.optimize(model, compile=True)
    assert list(model.state_dict()) == keys
    parts = [model.vision, *model.blocks]
    assert all(compiled.is_compiled(part) for part in parts)
    assert accel.describe(model).endswith(f"torch.compile on {len(parts)} parts")
    assert torch.equal(generate(model, pixels, max_new_tokens=6), reference)
    assert torch.equal(generate(model, pixels, max_new_tokens=6, num_beams=3),
                       generate(eager, pixels, max_new_tokens=6, num_beams=3))
    accel.optimize(model, compile=True)  # twice: nothing compiled twice
    assert sum(compiled.is_compiled(m) for m in model.modules()) == len(parts)
    twin = copy.deepcopy(model)  # compiles its own parts, not a second caller of the original's
    assert twin.blocks[0].forward.part is twin.blocks[0]
    assert torch.equal(generate(twin, pixels, max_new_tokens=6), reference)
    accel.restore(model)
    assert not any(compiled.is_compiled(m) or "forward" in m.__dict__ for m in model.modules())


def test_hooks_inside_a_compiled_part_fire(model: GIT, traced: None) -> None:
    """A hook registered after compiling, on a module inside a compiled block, still sees every call
    (dynamo alone would not re-trace for it): the block runs eagerly while the hook is there."""
    pixels = torch.randn(1, 3, 32, 32)
    accel.optimize(model, compile=True)
    generate(model, pixels, max_new_tokens=3)  # compiled before any hook
    seen = []
    handle = model.blocks[0].mlp.register_forward_hook(lambda *_: seen.append(True))
    block_seen = []
    model.blocks[1].register_forward_hook(lambda *_: block_seen.append(True))  # on the part itself
    generate(model, pixels, max_new_tokens=3)
    assert len(seen) == 4  # prefix, prefill and 2 steps
    assert len(block_seen) == 3  # the last block: prefill and 2 steps (the prefix takes its keys and values only)
    assert compiled.observed(model.blocks[0]) and not compiled.observed(model.blocks[1])
    handle.remove()
    assert not compiled.observed(model.blocks[0])
    with torch.no_grad():
        out = model(pixels, torch.tensor([[1, 5, 6]]), output_attentions=True)  # the recording list: eager
    assert len(out.attentions) == len(model.blocks)


def test_missing_compiler_warns_once_and_the_model_still_works(model: GIT, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "unavailable", lambda device: "inductor cannot compile for cpu (no C++ compiler)")
    pixels = torch.randn(1, 3, 32, 32)
    reference = generate(copy.deepcopy(model), pixels, max_new_tokens=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accel.optimize(model, compile=True)
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and "no C++ compiler" in str(caught[0].message)
    assert not any(compiled.is_compiled(m) for m in model.modules())
    assert "not compiled (inductor cannot compile for cpu (no C++ compiler))" in accel.describe(model)
    assert torch.equal(generate(model, pixels, max_new_tokens=4), reference)


@pytest.mark.slow  # inductor builds C++ for each graph: 1-2 minutes on the shared 2-core machine
@pytest.mark.skipif(compiled.unavailable(torch.device("cpu")) is not None, reason="inductor cannot compile here")
def test_inductor_tokens(model: GIT) -> None:
    torch._dynamo.reset()
    pixels = torch.randn(2, 3, 32, 32)
    reference = generate(accel.optimize(copy.deepcopy(model)), pixels, max_new_tokens=5)
    assert torch.equal(generate(accel.optimize(model, compile=True), pixels, max_new_tokens=5), reference)
