"""Writes that never leave a half-written file behind: build under a temporary name, then rename.

A crash mid-write (full disk, kill, exception) leaves the previous file or directory intact.
Temporary names sit next to the target so the rename stays on one filesystem (atomic).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, then rename tmp_path over `path`; on failure remove tmp_path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # a file meant to be shared, whatever mode its writer chose
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class atomic_directory:
    """Build a directory under a temporary name next to `target`, then rename it into place.

    An existing non-empty `target` is replaced only with force=True (moved aside, swapped,
    then deleted), so a failure at any point leaves either the old or the new directory."""

    def __init__(self, target: Path, *, force: bool = False) -> None:
        self.target = target
        if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not force:
            raise FileExistsError(f"{target} already exists; pass --force to overwrite it")

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type: type | None, *_: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
        for file in self.tmp.rglob("*"):
            if file.is_file():
                os.chmod(file, 0o644)
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
            os.replace(self.tmp, self.target)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(self.tmp, self.target)
