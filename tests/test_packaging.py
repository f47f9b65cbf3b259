"""How the package installs: a src layout, so nothing beside a user's script shadows it, and
metadata setuptools builds without a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_folder_named_git_scratch_beside_a_script_hides_nothing(tmp_path: Path) -> None:
    """A clone folder named git_scratch beside a script was imported as an empty namespace package
    ("cannot import name 'GIT' ... (unknown location)") while the package lived at the repo's top."""
    (tmp_path / "git_scratch").mkdir()  # as `git clone ... git_scratch` leaves it
    (tmp_path / "git_scratch" / "README.md").write_text("a clone\n")
    script = tmp_path / "use.py"
    script.write_text("from git_scratch import GIT\nprint(GIT.__module__)\n")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "git_scratch.model.git"


def test_license_is_an_spdx_string() -> None:
    """A license table made setuptools print a deprecation warning at every install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in " ".join(project["build-system"]["requires"])


def test_the_public_names_load_on_first_use_and_import_no_torch_before() -> None:
    """`import git_scratch` imports no torch (the ONNX runtime's deployments run without it); each name
    of __all__ then resolves to the object its module defines."""
    script = ("import sys, git_scratch\n"
              "assert 'torch' not in sys.modules, 'import git_scratch imported torch'\n"
              "from git_scratch import *\n"
              "print(len(git_scratch.__all__))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import importlib

    import git_scratch

    assert int(run.stdout) == len(git_scratch.__all__) == len(git_scratch.EXPORTS)
    for name, (module, attribute) in git_scratch.EXPORTS.items():
        defined = importlib.import_module(module)
        assert getattr(git_scratch, name) is (defined if attribute is None else getattr(defined, attribute)), name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        git_scratch.nonexistent  # noqa: B018
