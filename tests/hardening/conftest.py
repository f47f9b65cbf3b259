"""The hardening suite: hypothesis keeps its files out of the repository, and the run ends by
printing how many inputs each kind of test tried."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis.configuration import set_hypothesis_home_dir

from tests.hardening.support import CASES

# The fuzz tests use no example database (support.fuzz); hypothesis still caches the constants
# it finds in the source, which belongs in a temporary directory, not in the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "git_scratch-hypothesis")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The models here are tiny: a second intra-op thread only adds synchronisation, and on a
    busy shared CPU the threads of a tiny op wait on each other (we measured 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter) -> None:
    if CASES:
        terminalreporter.write_sep("-", f"hardening: {sum(CASES.values())} inputs tried")
        for kind, n in sorted(CASES.items()):
            terminalreporter.write_line(f"{n:6d}  {kind}")
