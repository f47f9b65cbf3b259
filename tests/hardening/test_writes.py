"""Writes: every output goes to a temporary name and is renamed into place, so a writer killed
mid-way leaves the previous file intact; nothing that exists is replaced without --force.

"Killed mid-way" is exception injection: the low-level writer (safetensors' save_file,
torch.save, Path.write_text, matplotlib's savefig) writes half of its bytes, then raises, as a
full disk or a kill would leave it. A source scan checks that no new code writes any other way.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from git_scratch import GIT, GitConfig
from git_scratch.atomic import atomic_directory
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from tests.conftest import tiny_config
from tests.hardening.support import CASES, ROOT, WORDS, error_line, make_checkpoint, run_cli, snapshot


class Injected(OSError):
    """What a full disk looks like to the writer."""


def half_then_fail(write: Callable, path_arg: int) -> Callable:
    """`write`, except that the file it was writing is cut to half its bytes and then it fails."""
    def broken(*args, **kwargs):
        write(*args, **kwargs)
        path = Path(args[path_arg])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        raise Injected("injected: no space left on device")
    return broken


def write_text_half(path: Path, text: str, *args, **kwargs):
    path.write_bytes(text.encode()[: len(text) // 2])
    raise Injected("injected: no space left on device")


@pytest.fixture
def model() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config())


def tiny_train_state(model: GIT):
    from git_scratch.training.loop import TrainConfig

    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return optimizer, scheduler, TrainConfig(train_manifest="m.jsonl")


def writers(tmp_path: Path, model: GIT, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Path, Callable, Callable]]:
    """name -> (output, write it the first time, write it again under injection)."""
    import matplotlib.figure
    import safetensors.torch

    import git_scratch.checkpoints.files as convert
    import git_scratch.training.loop as train

    tokenizer = GitTokenizer.word_level(WORDS)
    processor = ImageProcessor(size=32, crop_size=32)
    optimizer, scheduler, cfg = tiny_train_state(model)
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]

    def inject_save_file():
        monkeypatch.setattr(convert, "save_file", half_then_fail(safetensors.torch.save_file, 1))

    def inject_text():
        monkeypatch.setattr(Path, "write_text", write_text_half)

    def inject_torch_save():
        monkeypatch.setattr(torch, "save", half_then_fail(torch.save, 1))

    def inject_savefig():
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail(matplotlib.figure.Figure.savefig, 1))

    def again(inject: Callable, write: Callable) -> Callable:
        return lambda: (inject(), write())

    return {
        "converted checkpoint (GIT.save_pretrained)": (
            tmp_path / "ckpt", lambda: model.save_pretrained(tmp_path / "ckpt"),
            again(inject_save_file, lambda: model.save_pretrained(tmp_path / "ckpt", force=True))),
        "training checkpoint (train.save_checkpoint)": (
            tmp_path / "run" / "checkpoints" / "step-0000002",
            lambda: train.save_checkpoint(tmp_path / "run", 2, model, tokenizer, processor, optimizer, scheduler, cfg),
            again(inject_torch_save, lambda: train.save_checkpoint(tmp_path / "run", 2, model, tokenizer, processor,
                                                                   optimizer, scheduler, cfg))),
        "loss curve PNG (train.plot_loss)": (
            tmp_path / "loss.png", lambda: train.plot_loss(history, tmp_path / "loss.png"),
            again(inject_savefig, lambda: train.plot_loss(history[:1], tmp_path / "loss.png"))),
        "metrics JSON lines (train metrics.jsonl)": (
            tmp_path / "metrics.jsonl", lambda: train._write_history(tmp_path / "metrics.jsonl", history),
            again(inject_text, lambda: train._write_history(tmp_path / "metrics.jsonl", history[:1]))),
        "tokenizer files": (
            tmp_path / "tok", lambda: tokenizer.save_pretrained(tmp_path / "tok"),
            again(inject_text, lambda: GitTokenizer.word_level(WORDS[:3]).save_pretrained(tmp_path / "tok"))),
        "preprocessor_config.json": (
            tmp_path / "proc", lambda: processor.save_pretrained(tmp_path / "proc"),
            again(inject_text, lambda: ImageProcessor(size=64, crop_size=64).save_pretrained(tmp_path / "proc"))),
        "git_scratch config JSON (GitConfig.save)": (
            tmp_path / "cfg.json", lambda: model.cfg.save(tmp_path / "cfg.json"),
            again(inject_text, lambda: model.cfg.replace(n_layer=3).save(tmp_path / "cfg.json", force=True))),
    }


WRITERS = ["converted checkpoint (GIT.save_pretrained)", "training checkpoint (train.save_checkpoint)",
           "loss curve PNG (train.plot_loss)", "metrics JSON lines (train metrics.jsonl)", "tokenizer files",
           "preprocessor_config.json", "git_scratch config JSON (GitConfig.save)"]


def state(path: Path) -> dict[str, bytes]:
    return snapshot(path) if path.is_dir() else {path.name: path.read_bytes()}


@pytest.mark.parametrize("name", WRITERS)
def test_writer_killed_midway_leaves_the_old_output(tmp_path: Path, model: GIT, monkeypatch: pytest.MonkeyPatch,
                                                    name: str) -> None:
    output, first, killed = writers(tmp_path, model, monkeypatch)[name]
    first()
    before = state(output)
    siblings = sorted(p.name for p in output.parent.iterdir())
    CASES["writers killed mid-write"] += 1
    with pytest.raises(Injected):
        killed()
    monkeypatch.undo()
    assert state(output) == before  # the old output, byte for byte
    assert sorted(p.name for p in output.parent.iterdir()) == siblings  # no temporary file or directory left
    if output.is_dir() and (output / "config.json").exists():
        GIT.from_pretrained(output)  # and still loadable


def test_convert_killed_midway_over_an_existing_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    import git_scratch.checkpoints.files as convert

    src, dst = make_checkpoint(tmp_path / "src"), make_checkpoint(tmp_path / "dst", n_layer=1)
    before = snapshot(dst)
    monkeypatch.setattr(convert, "save_file", half_then_fail(safetensors.torch.save_file, 1))
    CASES["writers killed mid-write"] += 1
    error_line(run_cli("convert", src, dst, "--force"), "injected: no space left on device", from_os=True)
    assert snapshot(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_existing_outputs_need_force(tmp_path: Path, model: GIT, monkeypatch: pytest.MonkeyPatch) -> None:
    """Library calls refuse with FileExistsError, commands with one line naming --force."""
    CASES["overwrites refused without --force"] += 4
    model.save_pretrained(tmp_path / "ckpt")
    model.cfg.save(tmp_path / "cfg.json")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="--force"):
        model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="force=True"):
        GitConfig.from_name("git-base").save(tmp_path / "cfg.json")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    error_line(run_cli("convert", tmp_path / "ckpt", tmp_path / "mine"), "--force")
    error_line(run_cli("convert", tmp_path / "ckpt", tmp_path / "mine" / "notes.txt"), "--force")
    assert snapshot(tmp_path) == before


def test_train_refuses_an_out_dir_holding_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import git_scratch.training.loop as train

    out = tmp_path / "run"
    (out / "checkpoints" / "step-0000010").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    before = snapshot(out)
    started = []
    monkeypatch.setattr(train, "train", lambda cfg, progress, **options: started.append(cfg) or {
        "steps": 1, "final_loss": 0.0, "model_dir": str(out / "model")})
    common = ["train", "--train-manifest", "m.jsonl", "--out-dir", out]
    CASES["overwrites refused without --force"] += 1
    error_line(run_cli(*common), "already holds a training run", "--resume", "--force")
    assert snapshot(out) == before and started == []
    assert run_cli(*common, "--resume").code == 0
    assert (out / "checkpoints" / "step-0000010").is_dir()  # resuming keeps the run
    assert run_cli(*common, "--force").code == 0
    assert not (out / "checkpoints").exists()  # replacing it drops the old steps, which would outrank the new
    assert [cfg.resume for cfg in started] == [True, False]


def test_atomic_directory_failure_inside_the_block(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    CASES["writers killed mid-write"] += 1
    with pytest.raises(Injected):
        with atomic_directory(target, force=True) as tmp:
            (tmp / "new.txt").write_text("half of it")
            raise Injected("injected")
    assert snapshot(target) == {"old.txt": b"old"} and [p.name for p in tmp_path.iterdir()] == ["out"]


# --- no code writes any other way ------------------------------------------------------------------

WRITE_METHODS = {"write_text", "write_bytes", "save", "savefig", "copyfile", "copy", "copy2", "copytree"}
WRITE_FUNCTIONS = {"save_file", "open"}
# (module, function) -> why its direct writes are safe.
ALLOWED = {
    ("checkpoints.files", "write_model_files"): "its callers pass a directory that atomic_directory is building",
    ("training.loop", "write_model_dir"): "a changed model's model.pt; its callers pass a directory that atomic_directory "
                                  "is building",
    ("demo.shapes", "generate_shapes"): "dataset PNGs; the manifests, written last under a temporary name, mark the "
                                   "directory complete",
    ("demo.recipe", "prepare_out_dir"): "a marker file in the directory it has just created",
    ("export.onnx", "_run_exporter"): "a graph file; export_onnx's callers pass a path in the directory "
                                      "atomic_directory is building",
    ("export.onnx", "_rename_axes"): "rewrites that graph file in the same temporary directory",
    ("explore.session", "upload"): "an upload, into the server's own temporary directory (deleted when it stops)",
    ("explore.session", "png"): "PNG bytes into an in-memory buffer, for an HTTP response",
    ("atomic", "atomic_write"): "the primitive itself",
    ("atomic", "__exit__"): "atomic_directory's renames",
}


def direct_writes() -> list[str]:
    """Write calls in git_scratch that are neither inside a function given to atomic_write, nor
    inside a `with atomic_directory(...)` block, nor ALLOWED."""
    found = []
    for path in sorted((ROOT / "src" / "git_scratch").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT / "src" / "git_scratch").with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        atomic_names = {t.id for node in ast.walk(tree)
                        if isinstance(node, ast.Assign) and _is_call(node.value, "atomic_directory")
                        for t in node.targets if isinstance(t, ast.Name)}

        def visit(node: ast.AST, function: str, safe: bool) -> None:
            if isinstance(node, ast.FunctionDef):
                function = node.name
            if isinstance(node, ast.With) and any(_is_call(item.context_expr, "atomic_directory")
                                                  or getattr(item.context_expr, "id", None) in atomic_names
                                                  for item in node.items):
                safe = True  # writes into the temporary directory
            if isinstance(node, ast.Call) and _writes(node) and not safe and (module, function) not in ALLOWED:
                found.append(f"{module}.{function}: {ast.unparse(node)[:80]}")
            gives_writer = _is_call(node, "atomic_write")  # atomic_write(path, lambda tmp: ...)
            for child in ast.iter_child_nodes(node):
                visit(child, function, safe or (gives_writer and isinstance(child, ast.Lambda)))

        visit(tree, "<module>", False)
    return found


def _is_call(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name


def _writes(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        if func.attr == "replace" and getattr(func.value, "id", None) == "os":
            return True
        return func.attr in WRITE_METHODS and not (func.attr == "save" and getattr(func.value, "id", "") == "self")
    if isinstance(func, ast.Name) and func.id in WRITE_FUNCTIONS:
        if func.id == "open":
            modes = [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "mode")]
            mode = modes[0] if modes else None
            return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
        return True
    return False


def test_every_write_goes_through_atomic() -> None:
    assert direct_writes() == []
