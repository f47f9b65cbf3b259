"""Docs generated from code must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_conversion_key_table_is_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "key_table.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
