"""git_scratch: GIT (GenerativeImage2Text) written from scratch in PyTorch, with transformers parity.

The public API is what this module exports (docs/architecture.md has the tree behind it):

    model = git_scratch.load("path/to/git-base-coco")        # GIT.from_pretrained(path) is the same
    git_scratch.save_variant(changed, "out", "my_pkg.mod:rebuild")   # a changed model, loaded back by load
    ids = git_scratch.generate(model, pixel_values)           # model.generate(pixel_values) is the same

Each name is imported on first use (PEP 562 `__getattr__`), so `import git_scratch` alone imports
no torch: the ONNX runtime, `git_scratch.export.runtime`, runs in a process with numpy and ONNX
Runtime only (tests/export checks it), and `git-scratch --help` starts without loading PyTorch.
"""

from importlib import import_module
from typing import Any

# public name -> (module, attribute in it; None for the module itself)
EXPORTS: dict[str, tuple[str, str | None]] = {
    "accel": ("git_scratch.accel", None),
    "atomic_directory": ("git_scratch.atomic", "atomic_directory"),
    "atomic_write": ("git_scratch.atomic", "atomic_write"),
    "atomic_write_text": ("git_scratch.atomic", "atomic_write_text"),
    "load": ("git_scratch.checkpoints.files", "load_pretrained"),
    "save": ("git_scratch.checkpoints.files", "save_pretrained"),
    "save_variant": ("git_scratch.checkpoints.variant", "save_variant"),
    "GitConfig": ("git_scratch.config", "GitConfig"),
    "VisionConfig": ("git_scratch.config", "VisionConfig"),
    "preset_names": ("git_scratch.config", "preset_names"),
    "GitProcessor": ("git_scratch.data.git_processor", "GitProcessor"),
    "Example": ("git_scratch.data.manifest", "Example"),
    "ManifestDataset": ("git_scratch.data.manifest", "ManifestDataset"),
    "read_manifest": ("git_scratch.data.manifest", "read_manifest"),
    "ImageProcessor": ("git_scratch.data.processor", "ImageProcessor"),
    "load_image": ("git_scratch.data.processor", "load_image"),
    "sniff_media": ("git_scratch.data.processor", "sniff_media"),
    "GitTokenizer": ("git_scratch.data.tokenizer", "GitTokenizer"),
    "load_video_frames": ("git_scratch.data.video", "load_video_frames"),
    "preprocess_video": ("git_scratch.data.video", "preprocess_video"),
    "AnswerTrie": ("git_scratch.generation.constrain", "AnswerTrie"),
    "Choice": ("git_scratch.generation.constrain", "Choice"),
    "classify": ("git_scratch.generation.constrain", "classify"),
    "GenerateOutput": ("git_scratch.generation.outputs", "GenerateOutput"),
    "compute_transition_scores": ("git_scratch.generation.outputs", "compute_transition_scores"),
    "ImagePrefix": ("git_scratch.generation.prefix", "ImagePrefix"),
    "encode_prefix": ("git_scratch.generation.prefix", "encode_prefix"),
    "SEMANTICS": ("git_scratch.generation.search", "SEMANTICS"),
    "answer": ("git_scratch.generation.search", "answer"),
    "generate": ("git_scratch.generation.search", "generate"),
    "GIT": ("git_scratch.model.git", "GIT"),
    "git_loss": ("git_scratch.model.git", "git_loss"),
    "GitOutput": ("git_scratch.model.outputs", "GitOutput"),
    "evaluate": ("git_scratch.training.evaluate", "evaluate"),
    "predict": ("git_scratch.training.evaluate", "predict"),
    "score": ("git_scratch.training.evaluate", "score"),
    "TrainConfig": ("git_scratch.training.loop", "TrainConfig"),
    "train": ("git_scratch.training.loop", "train"),
}
__all__ = sorted(EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'git_scratch' has no attribute {name!r}")
    module, attribute = EXPORTS[name]
    value = import_module(module) if attribute is None else getattr(import_module(module), attribute)
    globals()[name] = value  # looked up once: later reads are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
