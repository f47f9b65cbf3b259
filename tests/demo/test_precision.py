"""The demo's precision: bf16 on a CPU with bf16 instructions, fp32 without them or when asked,
and the printout saying which and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from git_scratch.demo import recipe
from git_scratch.demo.recipe import cpu_bf16_flags, demo_precision, report, run_demo
from git_scratch.demo.shapes import ShapesConfig

TINY = ShapesConfig(n_train=64, n_heldout=8, n_compositional=8)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_bf16_flags(cpuinfo) == ["avx512_bf16"]
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_bf16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("flags\t\t: fpu sse4_2 avx2 fma\n")
    assert cpu_bf16_flags(cpuinfo) == []
    assert cpu_bf16_flags(tmp_path / "missing") == []


def test_the_rule(monkeypatch) -> None:
    monkeypatch.setattr(recipe, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    precision, why = demo_precision("cpu")
    assert precision == "bf16" and "AVX512_BF16" in why
    monkeypatch.setattr(recipe, "cpu_bf16_flags", lambda: [])
    precision, why = demo_precision("cpu")
    assert precision == "fp32" and "no bf16 instructions" in why
    assert demo_precision("cuda")[0] == "auto"


@pytest.mark.parametrize("asked", [None, "fp32"])
def test_the_demo_trains_in_the_chosen_precision_and_says_so(tmp_path: Path, asked: str | None) -> None:
    result = run_demo(tmp_path / "demo", steps=2, shapes=TINY, progress=False, precision=asked)
    expected = asked or demo_precision("cpu")[0]
    assert result["precision"] == expected == result["train_config"]["precision"]
    why = "asked for" if asked else demo_precision("cpu")[1]
    assert f"precision {expected} ({why})" in report(result).splitlines()


def test_a_bad_precision_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision = 'fp16' is not one of auto, fp32, bf16"):
        run_demo(tmp_path / "demo", steps=2, shapes=TINY, progress=False, precision="fp16")
    assert not (tmp_path / "demo").exists()
