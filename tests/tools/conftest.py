"""What the picture tests share: the figures a test's drawing saved, to read back what was drawn."""

from __future__ import annotations

import pytest


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure saved while the test runs, in order; the saving itself still happens."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures
