"""`export_onnx`: a GIT model -> a directory ONNX Runtime (or any ONNX client) decodes from.

    image.onnx          pixel_values (B, 3, H, W) -> keys.i, values.i (B, H, N, Dh), every layer i
    video.onnx          video models only: pixel_values (B, F, 3, H, W) -> the same, N = F * n
    text_step.onnx      input_ids, positions, mask, past_keys.i, past_values.i -> logits, present_keys.i, ...
    export.json         what runtime.py checks before it runs anything: opset, dtype, the ids, every
                        graph's inputs and outputs with their shapes (names for the dynamic axes)
    tokenizer.json, tokenizer_config.json, preprocessor_config.json    as in a checkpoint

The graphs are graphs.py's modules, traced by torch.export (`torch.onnx.export(dynamo=True)`,
onnxscript translating). The whole directory is built under a temporary name and renamed into
place (atomic.py), so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import accel
from ..atomic import atomic_directory
from ..model.git import GIT
from .graphs import ImageGraph, TextStepGraph, check_exportable

FORMAT = "git-scratch-onnx"
VERSION = 1
DEFAULT_OPSET = 18  # the lowest opset torch's dynamo exporter translates to without a version conversion
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
ONNX_TYPES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.bool: "bool"}


def export_onnx(model: GIT, out_dir: str | Path, *, tokenizer: Any = None, processor: Any = None,
                opset: int = DEFAULT_OPSET, dtype: str = "fp32", force: bool = False) -> Path:
    """Write the export directory `out_dir` (see the module docstring) and return it. `tokenizer`
    and `processor` (GitTokenizer, ImageProcessor), when given, are saved beside the graphs; the
    processor's crop size fixes the graphs' H and W (else the ViT's own image size)."""
    check_exportable(model)
    if model.__dict__.get(accel.SETTINGS):  # restore would cast back from the rounded values, and re-apply nothing
        raise ValueError(f"the model went through accel.optimize with a precision or compile ({accel.describe(model)}); "
                         "export the checkpoint as loaded (git_scratch.load(path)), with dtype='fp16' for half precision")
    if dtype not in DTYPES:
        raise ValueError(f"dtype = {dtype!r} is not one of {', '.join(DTYPES)}; pass fp32 (the parity reference) or fp16")
    if not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset = {opset!r}: the exporter writes opset {DEFAULT_OPSET} or newer; pass --opset 18 or more")
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, force=force) as tmp:
        was_fast = accel.is_optimized(model)
        accel.restore(model)  # the graphs must hold plain ops, not accel's kernel choices
        original_dtype = model.lm_head.weight.dtype
        try:
            model.to(DTYPES[dtype])
            size = processor.crop_size if processor is not None else model.cfg.vision.image_size
            graphs = {"image": _export_image(model, tmp / "image.onnx", size, None, opset),
                      "text_step": _export_text_step(model, tmp / "text_step.onnx", opset)}
            if model.cfg.n_frames is not None:
                graphs["video"] = _export_image(model, tmp / "video.onnx", size, model.cfg.n_frames, opset)
        finally:
            model.to(original_dtype)
            if was_fast:
                accel.optimize(model)
        description = describe(model, opset, dtype, size, graphs)
        (tmp / "export.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
    return out_dir


def layer_names(prefix: str, n_layer: int) -> list[str]:
    """prefix + keys.0, prefix + values.0, prefix + keys.1, ...: the cache tensors in graph order."""
    return [f"{prefix}{kind}.{i}" for i in range(n_layer) for kind in ("keys", "values")]


def _export_image(model: GIT, path: Path, size: int, n_frames: int | None, opset: int) -> dict[str, Any]:
    frames = () if n_frames is None else (n_frames,)
    pixel_values = torch.zeros(2, *frames, 3, size, size, dtype=model.lm_head.weight.dtype)
    batch = torch.export.Dim("batch")
    outputs = layer_names("", model.cfg.n_layer)
    _run_exporter(ImageGraph(model), (pixel_values,), path, opset, input_names=["pixel_values"],
                  output_names=outputs, dynamic_shapes=({0: batch},))
    return read_signature(path)


def _export_text_step(model: GIT, path: Path, opset: int) -> dict[str, Any]:
    cfg = model.cfg
    rows, step, past = 2, 3, 5  # example sizes only: every one of these axes is dynamic
    float_type = model.lm_head.weight.dtype
    caches = [torch.zeros(rows, cfg.n_head, past, cfg.head_dim, dtype=float_type) for _ in range(2 * cfg.n_layer)]
    inputs = (torch.zeros(rows, step, dtype=torch.long), torch.arange(step).expand(rows, step),
              torch.ones(rows, 1, step, past + step, dtype=torch.bool), *caches)
    r, s, p = torch.export.Dim("rows"), torch.export.Dim("step"), torch.export.Dim("past")
    # the mask's key axis is past + step; torch.export names it itself (AUTO), renamed "keys" below
    dynamic = {"input_ids": {0: r, 1: s}, "positions": {0: r, 1: s}, "mask": {0: r, 2: s, 3: torch.export.Dim.AUTO},
               "past": tuple({0: r, 2: p} for _ in caches)}
    _run_exporter(TextStepGraph(model), inputs, path, opset,
                  input_names=["input_ids", "positions", "mask", *layer_names("past_", cfg.n_layer)],
                  output_names=["logits", *layer_names("present_", cfg.n_layer)], dynamic_shapes=dynamic)
    _rename_axes(path, {"mask": {3: "keys"}})
    return read_signature(path)


def _run_exporter(module: torch.nn.Module, inputs: tuple, path: Path, opset: int, **kwargs: Any) -> None:
    """torch.onnx.export through torch.export (dynamo=True), the exporter torch recommends, with
    the weights inside the file (an external-data side file would be one more thing to lose)."""
    # the exporter prints its progress on stdout and warns about axis names it merged: keep a
    # command's output to its own lines
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), inputs, dynamo=True, opset_version=opset, verbose=False,
                                    external_data=False, **kwargs)
    program.save(str(path), external_data=False)


def _rename_axes(path: Path, names: dict[str, dict[int, str]]) -> None:
    import onnx  # the export extra; imported where used, so `import git_scratch.export` costs nothing

    graph_model = onnx.load(str(path))
    for value in [*graph_model.graph.input, *graph_model.graph.output]:
        for axis, name in names.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(graph_model, str(path))


def read_signature(path: Path) -> dict[str, Any]:
    """A graph's file name, opset and inputs/outputs as export.json records them: name, element
    type, and shape, an int for a fixed axis and a name for a dynamic one."""
    import onnx

    graph_model = onnx.load(str(path), load_external_data=False)

    def values(entries: Any) -> list[dict[str, Any]]:
        return [{"name": v.name,
                 "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in entries]

    return {"file": path.name, "inputs": values(graph_model.graph.input), "outputs": values(graph_model.graph.output)}


def describe(model: GIT, opset: int, dtype: str, size: int, graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cfg = model.cfg
    return {
        "format": FORMAT, "version": VERSION, "opset": opset, "dtype": dtype,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size,
        "max_positions": cfg.max_positions, "image_size": size, "n_frames": cfg.n_frames,
        "n_image_tokens": {name: graph["outputs"][0]["shape"][2] for name, graph in graphs.items() if name != "text_step"},
        "bos_id": cfg.bos_id, "eos_id": cfg.eos_id, "pad_id": cfg.pad_id,
        "config": cfg.to_dict(),
        "graphs": graphs,
    }
