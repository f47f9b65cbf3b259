from collections.abc import Iterator

import pytest

from git_scratch import accel

pytest.importorskip("transformers", reason="parity tests need the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module", autouse=True, params=["accel", "plain"])
def kernels(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every parity test runs twice: with accel's kernels, as `git_scratch.load` gives a model,
    and with plain PyTorch layers (optimize made a no-op), so neither can drift from transformers."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "plain":
            patch.setattr(accel, "optimize", lambda model, **_: model)
        yield request.param
