"""What the explorer's tests share: a tiny checkpoint on disk loaded through the CLI's loader, a
server on port 0 in a thread, and urllib requests to it. The fixtures are imported by name
into each test module (`from tests.explore.support import app, files, one_thread`)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch.cli.common import Pipeline, load_pixels
from git_scratch.cli.explore import load_explorer
from git_scratch.explore import Explorer, make_server
from tests.cli.test_cli import write_video
from tests.hardening.support import make_checkpoint

TOKENS = 6  # max_new_tokens everywhere: short sequences keep each test at a second or two


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: a second intra-op thread only adds waiting on a shared CPU (tests/hardening)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Running:
    url: str
    explorer: Explorer
    server: Any


def start(explorer: Explorer) -> Running:
    server = make_server(explorer, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return Running(f"http://{host}:{port}", explorer, server)


def stop(running: Running) -> None:
    running.server.shutdown()
    running.server.server_close()
    running.explorer.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explore")
    image = root / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 31, 3), dtype=np.uint8)).save(image)
    return {"image": image, "video": write_video(root / "clip.mp4", n_frames=4),
            "image_ckpt": make_checkpoint(root / "image-ckpt"),
            "video_ckpt": make_checkpoint(root / "video-ckpt", n_frames=2)}


@pytest.fixture(scope="module")
def app(files: dict[str, Path]) -> Iterator[Running]:
    running = start(load_explorer(str(files["image_ckpt"])))  # the CLI's loader, from disk
    yield running
    stop(running)


def call(url: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request; a dict body is sent as JSON, bytes as they are."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def api(url: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, kind, payload = call(url, path, body, headers)
    assert (status, kind) == (200, "application/json"), payload
    return json.loads(payload)


def refused(url: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, message) of a request that must fail with a JSON one-liner."""
    status, kind, payload = call(url, path, body, headers)
    assert 400 <= status < 500 and kind == "application/json", (status, payload)
    message = json.loads(payload)["error"]
    assert "\n" not in message and message
    return status, message


def upload(url: str, path: Path, name: str | None = None) -> dict[str, Any]:
    return api(url, "/api/upload", path.read_bytes(), {"X-Filename": name or path.name})


def pixels(explorer: Explorer, path: Path) -> torch.Tensor:
    """What the caption command feeds the model for this image, (1, 3, H, W)."""
    return load_pixels(str(path), "image", Pipeline(explorer.name, explorer.model, explorer.tokenizer,
                                                    explorer.processor))


def ids(seq: dict[str, Any]) -> list[int]:
    return [token["id"] for token in seq["tokens"]]


def through_eos(row: torch.Tensor, eos: int) -> list[int]:
    row = row.tolist()
    return row[: row.index(eos) + 1] if eos in row else row


