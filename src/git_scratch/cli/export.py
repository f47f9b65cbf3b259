"""`git-scratch export MODEL OUT_DIR`: ONNX graphs of a checkpoint, which ONNX Runtime decodes (docs/export.md)."""

from __future__ import annotations

import argparse
import importlib.util

from .common import Pipeline, load_pipeline, resolve_model

EXTRA = "pip install 'git-scratch[export]'"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="checkpoint directory, or a hub id such as microsoft/git-base")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the export directory to write")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (default, the only one)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the lowest the exporter writes)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                        help="fp32 (default) is the parity reference; fp16 halves the files")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def run(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX: image and text-step graphs, export.json, tokenizer and processor files."""
    check_extra("onnx", "onnxscript")
    from ..checkpoints.files import load_pretrained
    from ..data.processor import ImageProcessor
    from ..data.processor_config import find_settings
    from ..data.tokenizer import GitTokenizer
    from ..export.onnx import export_onnx

    directory = resolve_model(args.model)
    tokenizer = GitTokenizer.from_pretrained(directory)
    model = load_pretrained(directory, fast=False)  # plain layers: the graphs hold plain ops
    size = None if find_settings(directory) is not None else model.cfg.vision.image_size
    processor = ImageProcessor.from_pretrained(directory, size)
    out = export_onnx(model, args.out_dir, tokenizer=tokenizer, processor=processor, opset=args.opset,
                      dtype=args.dtype, force=args.force)
    print(out)
    return 0


def check_extra(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} not installed; the ONNX export needs the export extra: {EXTRA}")


# --- what caption and vqa share for --runtime onnxruntime -------------------------------------


def add_runtime_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                        help="torch (default) runs MODEL; onnxruntime runs an export directory of git-scratch export")


def load_runtime_pipeline(args: argparse.Namespace, task: str = "caption") -> Pipeline:
    """load_pipeline's Pipeline, or with --runtime onnxruntime one over an export directory."""
    if args.runtime == "torch":
        return load_pipeline(args, task)
    check_extra("onnx", "onnxruntime")
    from ..data.processor import ImageProcessor
    from ..data.tokenizer import GitTokenizer
    from ..export.decode import load_onnx

    model = load_onnx(args.model)
    processor = ImageProcessor.from_pretrained(args.model, model.exported.description["image_size"])
    if getattr(args, "backend", None) is not None:
        processor = processor.for_backend(args.backend, task)
    return Pipeline(args.model, model, GitTokenizer.from_pretrained(args.model), processor)
