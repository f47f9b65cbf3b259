"""Helpers for the hardening tests: run the CLI in-process, check that an error reached the
user as one documented line, and count the cases each test tried (printed at the end of the run).

Imported as `tests.hardening.support` by the tests and by conftest.py, so both see one CASES.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
import tempfile
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings

from git_scratch import GIT
from git_scratch.cli import main
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "git-scratch: error: "
CASES: Counter[str] = Counter()  # kind of input -> inputs tried, summed over the run


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings for CI: the same cases on every machine (derandomize), no example
    database written to disk, no per-example deadline on a busy shared CPU."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run_cli(*argv: object) -> Run:
    """`git-scratch ARGV...` in this process, stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Run(code, out.getvalue(), err.getvalue())


def error_line(run: Run, *needles: str, from_os: bool = False) -> str:
    """A failed run printed exactly one documented error line, holding every needle; returns it.
    from_os: an OSError's own text (a full disk), which docs/errors.md describes as a class."""
    assert "Traceback" not in run.err, run.err
    assert run.code == 2, (run.code, run.out, run.err)
    lines = run.err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(PREFIX), run.err
    message = lines[0].removeprefix(PREFIX)
    if from_os:
        assert all(needle in message for needle in needles), (needles, message)
    else:
        check_message(message, *needles)
    return message


def check_message(message: str, *needles: str) -> None:
    """One line, holding every needle, and made from a template docs/errors.md lists."""
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert documented(message), f"no template in docs/errors.md makes: {message}"


@cache
def _templates() -> tuple:
    spec = importlib.util.spec_from_file_location("errors_table", ROOT / "scripts" / "errors_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("errors_table", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["errors_table"])
    module = sys.modules["errors_table"]
    # Wrappers ("{source}: {e}") match anything; a template must carry words of its own to count.
    return tuple(module.pattern(site) for site in module.sites()
                 if sum(len(text) for hole, text in site.parts if not hole) >= 15 and not site.is_wrapper)


def documented(message: str) -> bool:
    return any(p.search(message) for p in _templates())


WORDS = [f"w{i}" for i in range(95)]  # word-level ids 4..98 fill the tiny vocabulary of 99


def make_checkpoint(path: Path, **overrides: object) -> Path:
    """A complete tiny checkpoint directory (weights, tokenizer, preprocessor), no transformers
    needed: the word-level tokenizer's [PAD]/[CLS]/[SEP] ids 0/2/3 are the model's pad/bos/eos."""
    torch.manual_seed(0)
    GIT.from_config(tiny_config(pad_id=0, bos_id=2, eos_id=3, **overrides)).save_pretrained(path)
    GitTokenizer.word_level(WORDS).save_pretrained(path)
    ImageProcessor(size=32, crop_size=32).save_pretrained(path)
    return path


def fresh_dir(root: Path, files: dict[str, bytes]) -> Path:
    """A new directory under root holding `files`."""
    directory = Path(tempfile.mkdtemp(dir=root))
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under directory and its bytes: to show nothing was written."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
