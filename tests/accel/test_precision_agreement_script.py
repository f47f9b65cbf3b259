"""scripts/precision_agreement.py refuses bad arguments in one line, before any training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "precision_agreement.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("precision_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--settings", "bf16,fp16"], "--settings names 'fp16'; choose from bf16, int8, bf16+int8, compile"),
    (["--model", "somewhere"], "--model needs --manifest"),
    (["--model", "no/such/dir", "--manifest", "x.jsonl"], "no/such/dir does not exist"),
    (["--threads", "0"], "--threads 0 must be at least 1"),
])
def test_bad_arguments_fail_in_one_line(script, capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
