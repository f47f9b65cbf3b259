"""git_scratch: GIT (GenerativeImage2Text) written from scratch in PyTorch, with transformers parity."""

from .config import GitConfig, VisionConfig
from .model import GIT, git_loss

__all__ = ["GIT", "GitConfig", "VisionConfig", "git_loss"]
__version__ = "0.1.0"
