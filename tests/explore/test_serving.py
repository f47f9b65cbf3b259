"""The explorer as a whole: a video checkpoint's frames, the parity table (and its 409 without
a transformers twin), the static files and nothing else, and the command that starts it all."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

import git_scratch.explore.server as server_module
import git_scratch.explore.session as session_module
from git_scratch import save_variant
from git_scratch.cli import main
from git_scratch.cli.explore import load_explorer
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.data.video import load_video_frames, preprocess_video
from git_scratch.tools.attention import attention_maps
from tests.checkpoints.variant_models import GatedGIT
from tests.conftest import tiny_config
from tests.explore.support import (  # noqa: F401 (app, files, one_thread: fixtures)
    TOKENS,
    Running,
    api,
    app,
    call,
    files,
    ids,
    one_thread,
    refused,
    start,
    stop,
    upload,
)
from tests.hardening.support import WORDS, run_cli


def test_video_frames_attention_and_mask(files: dict[str, Path]) -> None:
    running = start(load_explorer(str(files["video_ckpt"])))
    try:
        model, url = running.explorer.model, running.url
        media = upload(url, files["video"], "clip.mov")  # the content decides, not the name
        assert (media["kind"], media["frames"]) == ("video", 2)
        assert call(url, media["preview"] + "?frame=1")[0] == 200
        seq = api(url, "/api/caption", {"media_id": media["media_id"], "num_beams": 1, "max_new_tokens": TOKENS})
        frames = load_video_frames(files["video"], 2)
        pixel_values = preprocess_video(frames, running.explorer.processor)[None]  # (1, 2, 3, 32, 32)
        expected = attention_maps(model, pixel_values, torch.tensor([[model.cfg.bos_id]]), max_new_tokens=TOKENS,
                                  layers=[1], frame=1)
        assert expected.tokens == ids(seq["greedy"])
        got = api(url, "/api/attention", {"sequence_id": seq["greedy"]["sequence_id"], "token": 0, "layer": 1,
                                          "frame": 1})
        assert torch.equal(torch.tensor(got["map"], dtype=torch.float32), expected.maps[0, 0]) and got["frame"] == 1
        assert call(url, f"/api/mask/{seq['greedy']['sequence_id']}.png")[1] == "image/png"
    finally:
        stop(running)
    running = start(load_explorer(str(files["image_ckpt"])))
    try:
        status, message = refused(running.url, "/api/upload", files["video"].read_bytes(), {"X-Filename": "clip.mp4"})
    finally:
        stop(running)
    assert status == 415 and message.startswith("clip.mp4 is a video but") and "image model" in message


def test_parity_table_on_a_checkpoint_with_a_twin(app: Running, files: dict[str, Path]) -> None:
    pytest.importorskip("transformers")
    assert api(app.url, "/api/info")["parity"] is True
    media = upload(app.url, files["image"])["media_id"]
    report = api(app.url, "/api/parity", {"media_id": media})
    assert report["ok"] is True and report["tokens"].startswith("identical")
    stages = [row["stage"] for row in report["rows"]]
    assert stages[0] == "patch embedding" and "decoder layer 1" in stages and stages[-2] == "greedy tokens"
    for row in report["rows"]:
        assert row["ok"] is True
        if row["tolerance"] is not None:
            assert row["max_abs_diff"] <= row["tolerance"]


def test_parity_without_a_twin_is_409(tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    save_variant(GatedGIT(tiny_config(pad_id=0, bos_id=2, eos_id=3)), tmp_path / "v",
                 "tests.checkpoints.variant_models:build",
                 tokenizer=GitTokenizer.word_level(WORDS), processor=ImageProcessor(size=32, crop_size=32))
    running = start(load_explorer(str(tmp_path / "v")))
    try:
        info = api(running.url, "/api/info")
        assert info["parity"] is False and "variant" in info["parity_reason"]
        media = upload(running.url, files["image"])["media_id"]
        assert refused(running.url, "/api/parity", {"media_id": media}) == (409, info["parity_reason"])
        monkeypatch.setattr(running.explorer, "directory", files["image_ckpt"])  # a twin, but no transformers
        monkeypatch.setattr(session_module.importlib.util, "find_spec", lambda name: None)
        status, message = refused(running.url, "/api/parity", {"media_id": media})
        assert status == 409 and "pip install" in message
    finally:
        stop(running)


def test_static_files_and_nothing_else(app: Running) -> None:
    for path in sorted(server_module.STATIC.glob("*")):
        status, kind, payload = call(app.url, f"/static/{path.name}")
        assert (status, kind, payload) == (200, server_module.TYPES[path.suffix], path.read_bytes())
    for path in ("/static/..%2Fsession.py", "/static/../session.py", "/static/.hidden.js", "/api/nothing"):
        assert refused(app.url, path)[0] == 404


def test_the_command_prints_the_url_and_serves(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    assert run_cli("explore", "--help").code == 0
    made = []
    real = server_module.make_server
    monkeypatch.setattr(server_module, "make_server", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(main(["explore", str(files["image_ckpt"]),
                                                                   "--port", "0"])))
    thread.start()
    for _ in range(600):
        if made:
            break
        time.sleep(0.1)
    host, port = made[0].server_address[:2]
    try:
        assert host == "127.0.0.1"
        assert api(f"http://{host}:{port}", "/api/info")["model"] == str(files["image_ckpt"])
    finally:
        made[0].shutdown()
        thread.join(30)
    assert outcome == [0] and not made[0].explorer.store.exists()  # the uploads deleted on the way out
    expected = f"git-scratch explore: {files['image_ckpt']} at http://{host}:{port}/ (Ctrl-C stops)\n"
    assert capsys.readouterr().out == expected


def test_a_bad_model_gets_the_loaders_one_line(tmp_path: Path) -> None:
    ours, theirs = run_cli("explore", tmp_path / "missing"), run_cli("caption", tmp_path / "missing", "x.png")
    assert ours.code == 2 and ours.err == theirs.err and ours.err.count("\n") == 1
    assert "no such checkpoint directory" in ours.err


def test_a_taken_port_or_no_port_is_one_line(files: dict[str, Path]) -> None:
    running = start(load_explorer(str(files["image_ckpt"])))
    try:
        taken = running.server.server_address[1]
        run = run_cli("explore", files["image_ckpt"], "--port", taken)
        assert run.code == 2 and run.err.count("\n") == 1
        assert f"port {taken} on 127.0.0.1" in run.err and "--port 0" in run.err
    finally:
        stop(running)
    run = run_cli("explore", files["image_ckpt"], "--port", 70000)
    assert run.code == 2 and "--port 70000 is not a port" in run.err and run.err.count("\n") == 1
