"""An export directory (onnx.py) opened with ONNX Runtime, checked first, and run with numpy alone.

This module imports neither torch nor the rest of git_scratch: a deployment needs numpy, onnx
and onnxruntime only (tests/export check `torch` stays out of sys.modules). Every damaged file
is refused before a session runs, in one line naming it: a missing graph, an opset other than the
one export.json records, a graph whose inputs or outputs differ from export.json's description.

    runtime = open_export("out/")
    prefix = runtime.encode_image(pixel_values)               # [keys.0, values.0, ...] (B, H, N, Dh)
    logits, cache = runtime.text_step(input_ids, positions, mask, cache)   # cache: past -> present

Letters: B images, R rows, S tokens in one call, P past keys, N image tokens, V vocab.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "git-scratch-onnx"  # onnx.py writes the same; spelled twice so that this module imports nothing of it
REQUIRED = ("format", "version", "opset", "dtype", "n_layer", "n_head", "head_dim", "vocab_size", "max_positions",
            "image_size", "n_frames", "bos_id", "eos_id", "pad_id", "config", "graphs")
INSTALL = "the ONNX runtime needs the export extra: pip install 'git-scratch[export]'"


def import_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"onnxruntime is not installed; {INSTALL}") from None
    return onnxruntime


@dataclass
class ExportedModel:
    """The checked description (export.json) and one ONNX Runtime session per graph."""

    directory: Path
    description: dict[str, Any]
    sessions: dict[str, Any]  # "image", "text_step", and "video" for video models

    @property
    def float_type(self) -> np.dtype:
        return np.dtype(np.float16 if self.description["dtype"] == "fp16" else np.float32)

    def encode_image(self, pixel_values: np.ndarray) -> list[np.ndarray]:
        """pixel_values (B, 3, H, W), or (B, F, 3, H, W) for a video model -> keys.0, values.0, ... (B, H, N, Dh)."""
        graph = "video" if pixel_values.ndim == 5 else "image"
        if graph not in self.sessions:
            raise ValueError("pixel_values is 5-D (video) but this export has no video graph; pass (B, 3, H, W)")
        size = self.description["image_size"]
        expected = self.description["graphs"][graph]["inputs"][0]["shape"][1:]
        if list(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; this export takes "
                             f"(B, {', '.join(map(str, expected))}): preprocess at {size} px")
        return self.sessions[graph].run(None, {"pixel_values": pixel_values.astype(self.float_type)})

    def text_step(self, input_ids: np.ndarray, positions: np.ndarray, mask: np.ndarray,
                  past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """input_ids, positions (R, S) int64; mask (R, 1, S, P + S) bool; past keys.0, values.0, ...
        (R, H, P, Dh) -> logits (R, S, V) float32 and the present cache (R, H, P + S, Dh)."""
        names = [value["name"] for value in self.description["graphs"]["text_step"]["inputs"]]
        feeds = dict(zip(names, [input_ids.astype(np.int64), positions.astype(np.int64), mask.astype(bool), *past]))
        logits, *present = self.sessions["text_step"].run(None, feeds)
        return logits.astype(np.float32), present


def open_export(directory: str | Path, providers: list[str] | None = None) -> ExportedModel:
    """Check every file of an export directory, then open a session per graph (CPU by default)."""
    directory = Path(directory)
    description = read_description(directory)
    ort = import_runtime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are not the user's
    sessions = {}
    for name, graph in description["graphs"].items():
        path = directory / graph["file"]
        check_graph(path, graph, description["opset"])
        sessions[name] = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    return ExportedModel(directory, description, sessions)


def read_description(directory: Path) -> dict[str, Any]:
    path = directory / "export.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such export directory; write one with git-scratch export MODEL DIR")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; is {directory} a git-scratch export? "
                                "Write one with git-scratch export MODEL DIR")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-export with git-scratch export --force") from None
    missing = [key for key in REQUIRED if not isinstance(description, dict) or key not in description]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; re-export with git-scratch export --force")
    if description["format"] != FORMAT or description["version"] != 1:
        raise ValueError(f"{path} describes format {description['format']!r} version {description['version']!r}; "
                         f"this runtime reads {FORMAT!r} version 1: re-export with git-scratch export --force")
    graphs = description["graphs"]
    if not isinstance(graphs, dict) or not {"image", "text_step"} <= set(graphs):
        raise ValueError(f"{path} does not list the image and text_step graphs; re-export with git-scratch export --force")
    return description


def check_graph(path: Path, described: dict[str, Any], opset: int) -> None:
    """One line naming `path` when it is missing, has another opset or another signature than export.json says."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the export; re-export with git-scratch export --force")
    try:
        graph_model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable ONNX graph ({type(e).__name__}); re-export with "
                         "git-scratch export --force") from None
    found = next((entry.version for entry in graph_model.opset_import if entry.domain in ("", "ai.onnx")), None)
    if found != opset:
        raise ValueError(f"{path} has opset {found} but {path.parent / 'export.json'} says {opset}; "
                         "re-export with git-scratch export --force")
    for kind, values in (("inputs", graph_model.graph.input), ("outputs", graph_model.graph.output)):
        actual = [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                   "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]
        if actual != described.get(kind):
            raise ValueError(f"{path}'s {kind} differ from those {path.parent / 'export.json'} describes; "
                             "re-export with git-scratch export --force")
