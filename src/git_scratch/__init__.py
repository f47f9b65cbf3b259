"""git_scratch: GIT (GenerativeImage2Text) written from scratch in PyTorch, with transformers parity.

The public API is what this module exports (docs/architecture.md has the tree behind it):

    model = git_scratch.load("path/to/git-base-coco")        # GIT.from_pretrained(path) is the same
    git_scratch.save_variant(changed, "out", "my_pkg.mod:rebuild")   # a changed model, loaded back by load
    ids = git_scratch.generate(model, pixel_values)           # model.generate(pixel_values) is the same
"""

from . import accel
from .atomic import atomic_directory, atomic_write, atomic_write_text
from .checkpoints.files import load_pretrained as load
from .checkpoints.files import save_pretrained as save
from .checkpoints.variant import save_variant
from .config import GitConfig, VisionConfig, preset_names
from .data.git_processor import GitProcessor
from .data.manifest import Example, ManifestDataset, read_manifest
from .data.processor import ImageProcessor, load_image, sniff_media
from .data.tokenizer import GitTokenizer
from .data.video import load_video_frames, preprocess_video
from .generation.constrain import AnswerTrie, Choice, classify
from .generation.outputs import GenerateOutput, compute_transition_scores
from .generation.prefix import ImagePrefix, encode_prefix
from .generation.search import SEMANTICS, answer, generate
from .model.git import GIT, git_loss
from .model.outputs import GitOutput
from .training.evaluate import evaluate, predict, score
from .training.loop import TrainConfig, train

__all__ = [
    "GIT", "SEMANTICS", "AnswerTrie", "Choice", "Example", "GenerateOutput", "GitConfig", "GitOutput",
    "GitProcessor", "GitTokenizer", "ImagePrefix", "ImageProcessor", "ManifestDataset", "TrainConfig",
    "VisionConfig", "accel", "answer", "atomic_directory", "atomic_write", "atomic_write_text", "classify",
    "compute_transition_scores", "encode_prefix", "evaluate", "generate", "git_loss", "load", "load_image",
    "load_video_frames", "predict", "preprocess_video", "preset_names", "read_manifest", "save", "save_variant",
    "score", "sniff_media", "train",
]
__version__ = "0.1.0"
