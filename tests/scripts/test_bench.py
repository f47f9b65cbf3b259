"""scripts/bench.py on a tiny shape, one repeat: every case runs and matches transformers, and
the token check catches a model that decodes differently. No timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the benchmark compares with transformers: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench"]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_machine(bench):
    """Measuring the machine reads a 1 GiB buffer; the test needs only numbers to divide by."""
    return bench.Machine("cpu", "float32", 1, gflops=50.0, bandwidth=10.0, cpu="test")


def test_every_case_runs_on_a_tiny_shape_and_matches(bench, one_thread) -> None:
    args = bench.parse_args(["--shapes", "tiny", "--repeats", "1", "--threads", "1", "--no-memory"])
    results = bench.bench_shape("tiny", list(bench.CASES), args, fake_machine(bench), log=lambda _: None)
    assert [r.case for r in results] == list(bench.CASES)
    assert all(r.agree for r in results), [(r.case, r.check) for r in results if not r.agree]
    assert all(r.bound_s > 0 for r in results)
    text = bench.report(results, fake_machine(bench), "python scripts/bench.py --shapes tiny")
    assert text.count("| tiny |") == len(bench.CASES)


def test_token_check_catches_a_different_model(bench, one_thread, tmp_path: Path) -> None:
    cfg = bench.SHAPES["tiny"]()
    bench.build_checkpoint(cfg, tmp_path, seed=0)
    device = torch.device("cpu")
    ours = bench.load_ours(tmp_path, device, torch.float32)
    theirs = bench.load_theirs(tmp_path, device, torch.float32)
    x = bench.make_inputs(cfg, 0, device, torch.float32)
    case, machine = bench.CASES["caption"], fake_machine(bench)
    assert bench.run_case("tiny", case, ours, theirs, x, 1, machine).agree
    with torch.no_grad():
        theirs.output.bias[7] = 1e4  # transformers' model now always says token 7
    result = bench.run_case("tiny", case, ours, theirs, x, 1, machine)
    assert not result.agree and "differ" in result.check
    assert "**tokens differ" in bench.format_row(result)  # the table shows it in bold


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_cases_on_cuda_in_bf16(bench) -> None:
    args = bench.parse_args(["--shapes", "tiny", "--repeats", "1", "--device", "cuda", "--dtype", "bf16", "--no-memory"])
    machine = bench.Machine("cuda", "bfloat16", 1, gflops=1e4, bandwidth=1e3, cpu="test")
    results = bench.bench_shape("tiny", ["encode", "caption", "beam3", "train"], args, machine, log=lambda _: None)
    assert all(r.ours_s > 0 and r.theirs_s > 0 for r in results)  # bf16 tokens may differ; they must run


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: 5-20 s
def test_peak_memory_child_runs(bench, tmp_path: Path) -> None:
    bench.build_checkpoint(bench.SHAPES["tiny"](), tmp_path, seed=0)
    args = bench.parse_args(["--shapes", "tiny", "--threads", "1"])
    assert bench.child_peak("ours", "tiny", "encode", tmp_path, args) > 0


def test_doc_table_is_replaced_between_its_markers(bench) -> None:
    key = fake_machine(bench).key
    text = f"# Performance\n\nintro\n\n<!-- bench {key} begin -->\nold table\n<!-- bench {key} end -->\n\nanalysis\n"
    fresh = bench.render_doc(text, "new table", key)
    assert "old table" not in fresh and "new table" in fresh
    assert fresh.startswith("# Performance\n\nintro") and fresh.endswith("analysis\n")
    other = bench.render_doc(fresh, "bf16 table", "cpu bfloat16 threads=1 clock=wall")  # another setting: appended
    assert "new table" in other and other.rstrip().endswith("<!-- bench cpu bfloat16 threads=1 clock=wall end -->")


def test_cpu_clock_needs_one_thread(bench) -> None:
    with pytest.raises(SystemExit):  # the other threads' work would go uncounted
        bench.parse_args(["--clock", "cpu", "--threads", "2"])
    assert bench.parse_args(["--clock", "cpu", "--threads", "1"]).clock == "cpu"


def test_onnx_case_matches_both_sides_and_catches_other_tokens(bench, one_thread, monkeypatch) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX case needs the export extra: pip install -e '.[export]'")
    pytest.importorskip("onnxscript", reason="the ONNX case needs the export extra: pip install -e '.[export]'")
    from git_scratch.export.runtime import ExportedModel

    args = bench.parse_args(["--shapes", "tiny", "--repeats", "1", "--threads", "1", "--runtime", "onnxruntime"])
    results = bench.bench_onnx("tiny", list(bench.ONNX_CASES), args, fake_machine(bench), log=lambda _: None)
    assert [r.case for r in results] == list(bench.ONNX_CASES)
    assert all(r.agree and r.check == "identical, identical" for r in results), [r.check for r in results]
    assert all(r.onnx_s > 0 and r.bound_s > 0 for r in results)
    assert bench.onnx_report(results, fake_machine(bench), "bench").count("| tiny |") == len(bench.ONNX_CASES)

    text_step = ExportedModel.text_step

    def says_seven(self, *inputs):  # the exported graph now always says token 7
        logits, present = text_step(self, *inputs)
        logits[..., 7] = 1e4
        return logits, present

    monkeypatch.setattr(ExportedModel, "text_step", says_seven)
    result = bench.bench_onnx("tiny", ["caption"], args, fake_machine(bench), log=lambda _: None)[0]
    assert not result.agree and result.check.count("tokens differ") == 2  # from ours and from transformers
    assert "| **tokens differ" in bench.format_onnx_row(result)


def test_onnx_case_is_one_line_without_onnxruntime(bench, one_thread, monkeypatch, capsys) -> None:
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert bench.main(["--runtime", "onnxruntime", "--shapes", "tiny", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "skipped" in out and "[export]" in out


def test_onnx_runtime_refuses_cases_without_an_onnx_side(bench) -> None:
    with pytest.raises(SystemExit):  # training and the bare encoder call PyTorch modules directly
        bench.parse_args(["--runtime", "onnxruntime", "--cases", "train"])
    with pytest.raises(SystemExit):  # the CPU clock would not count ORT's pool threads
        bench.parse_args(["--runtime", "onnxruntime", "--clock", "cpu", "--threads", "1"])
    assert bench.parse_args(["--runtime", "onnxruntime"]).cases == ",".join(bench.ONNX_CASES)
