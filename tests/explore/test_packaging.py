"""A non-editable install ships the explorer's page: the wheel holds every file of static/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "git_scratch" / "explore" / "static"


def test_the_wheel_holds_the_static_page(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    pages = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert "index.html" in pages
    # a copy, so the build's build/ and egg-info land in tmp_path, not in the checkout
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                          "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    shipped = {Path(name).name for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("git_scratch/explore/static/")}
    assert shipped == set(pages)
