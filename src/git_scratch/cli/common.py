"""What the commands share: loading a checkpoint and its files, devices, shared flags, one-line errors.

MODEL is a checkpoint directory in the official layout (config.json, weights, tokenizer and
preprocessor files), or a hub id such as microsoft/git-base-coco when huggingface_hub can find
it in its cache or download it. A variant directory (variant.json: a changed model and the
builder that rebuilds it, checkpoints/variant.py) loads through the same `GIT.from_pretrained`.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import GitConfig
from ..data.backends import BACKENDS
from ..data.processor import ImageProcessor
from ..data.processor_config import find_settings
from ..data.tokenizer import GitTokenizer
from ..data.video import load_video_frames, preprocess_video
from ..generation.search import SEMANTICS
from ..model.git import GIT

log = logging.getLogger(__name__)

# fp32 is the parity reference (tests/parity/); bf16 and fp16 halve the memory and can change
# a word here and there, because greedy and beam search follow argmaxes that rounding can flip.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# owner/name as the hub spells repository ids; a relative path of that shape that exists wins.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_FILES = ["*.json", "vocab.txt", "*.safetensors"]


@dataclass(frozen=True)
class Pipeline:
    """A loaded checkpoint: the model and what turns files and text into its inputs."""

    name: str
    model: GIT
    tokenizer: GitTokenizer
    processor: ImageProcessor


def load_pipeline(args: argparse.Namespace, task: str = "caption") -> Pipeline:
    """The checkpoint of args.model, with its processor in args.backend's pipeline (when given) for
    `task`: "caption", or "vqa", for which the original's pipeline keeps the aspect and skips the crop."""
    device = parse_device(args.device)
    directory = resolve_model(args.model)
    tokenizer = GitTokenizer.from_pretrained(directory)  # before the weights: fails fast when absent
    start = time.perf_counter()
    model = GIT.from_pretrained(directory, dtype=DTYPES[args.dtype], device=device)
    log.info("loaded %s (%s, %s) in %.1f s", directory, args.dtype, device, time.perf_counter() - start)
    check_tokenizer(tokenizer, model.cfg, directory)
    # Official checkpoints ship preprocessor_config.json (transformers 5.x: processor_config.json) and
    # it is used as it is, even at another size than the ViT's (GIT interpolates its position table);
    # without one, CLIP preprocessing at the size the ViT was trained for.
    has_config = find_settings(directory) is not None
    processor = ImageProcessor.from_pretrained(directory, None if has_config else model.cfg.vision.image_size)
    if getattr(args, "backend", None) is not None:
        processor = processor.for_backend(args.backend, task)
    return Pipeline(args.model, model, tokenizer, processor)


def resolve_model(name: str) -> Path:
    """A local checkpoint directory as it is; a hub id (owner/name) from huggingface_hub's cache,
    else downloaded, when huggingface_hub is installed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise FileNotFoundError(f"{name} is a file; pass the checkpoint directory that holds it")
    if not HUB_ID.fullmatch(name):
        raise FileNotFoundError(f"{name}: no such checkpoint directory; pass a directory holding config.json "
                                "and model.safetensors, or a hub id such as microsoft/git-base-coco")
    unavailable = FileNotFoundError(f"{name} is not a local directory and could not be downloaded (offline?); "
                                    "download it elsewhere and pass its directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        log.info("huggingface_hub is not installed")
        raise unavailable from None
    for local_only in (True, False):
        try:
            directory = Path(snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=local_only))
            if not any(directory.glob("*.safetensors")):  # an older repository with only pytorch_model*.bin
                directory = Path(snapshot_download(name, allow_patterns=[*HUB_FILES, "pytorch_model*.bin"],
                                                   local_files_only=local_only))
            return directory
        except Exception as e:  # huggingface_hub raises many types: offline, not found, gated, HTTP
            log.info("%s (%s): %s", name, "cache" if local_only else "download", one_line(e))
    raise unavailable from None


def parse_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available (no GPU, or a CPU-only torch); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def check_tokenizer(tokenizer: GitTokenizer, cfg: GitConfig, directory: Path) -> None:
    """The model starts every prompt with cfg.bos_id and stops at cfg.eos_id, the tokenizer
    writes prompts and cuts answers with its own ids: they must agree, or the output is noise."""
    for role, ours, theirs in (("bos", tokenizer.bos_id, cfg.bos_id), ("eos", tokenizer.eos_id, cfg.eos_id)):
        if ours != theirs:
            raise ValueError(f"{directory}: the tokenizer's {role} id is {ours} but config.json's {role}_token_id "
                             f"is {theirs}; the tokenizer files belong to another checkpoint, copy the right ones")
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{cfg.vocab_size}; the tokenizer files belong to another checkpoint, copy the right ones")


def load_pixels(path: str, kind: str, pipe: Pipeline) -> torch.Tensor:
    """One file -> pixel_values (1, 3, H, W) for an image, (1, F, 3, H, W) for a video."""
    processor = pipe.processor
    if kind == "image":
        return processor.preprocess(processor.load(path))[None]  # the backend's alpha rule
    n_frames = pipe.model.cfg.n_frames
    if n_frames is None:
        raise ValueError(f"{path} is a video but {pipe.name} is an image model (no temporal embeddings); "
                         "use a video checkpoint such as microsoft/git-base-vatex")
    return preprocess_video(load_video_frames(path, n_frames), processor)[None]


def question_ids(tokenizer: GitTokenizer, question: str, *, original: bool = False) -> list[int]:
    """[CLS] + the question's tokens; `original`: cut to at most 38 of them as the original
    implementation does (GitTokenizer.original_prompt_ids). A question with no tokens would
    silently ask for a caption."""
    try:
        ids = tokenizer.original_prompt_ids(question) if original else tokenizer.prompt_ids(question)
    except ValueError as e:  # bytes in another encoding on the command line
        raise ValueError(f"question {shorten(question)!r}: {e}") from None
    if len(ids) == 1:
        raise ValueError(f"question {shorten(question)!r} has no words; ask something, or use "
                         "git-scratch caption for a caption")
    return ids


def check_prompt_length(n_prompt: int, max_new_tokens: int, cfg: GitConfig, question: str | None = None) -> None:
    """generate's own check names no question; this one names it and the flag to change."""
    if n_prompt + max_new_tokens <= cfg.max_positions:
        return
    room = cfg.max_positions - n_prompt
    if question is None:
        raise ValueError(f"--max-new-tokens {max_new_tokens} is more than the model's {cfg.max_positions} text "
                         f"positions leave after the [CLS] prompt; use at most {room}")
    fix = f"shorten it or lower --max-new-tokens to {room}" if room > 0 else "shorten it"
    raise ValueError(f"question {shorten(question)!r} is {n_prompt} tokens with [CLS], which with --max-new-tokens "
                     f"{max_new_tokens} exceeds the model's {cfg.max_positions} text positions; {fix}")


def empty_output_note(where: str, what: str, generated: Sequence[int] | torch.Tensor, tokenizer: GitTokenizer) -> str:
    """The stderr line for an empty caption or answer, so the user knows the model, not the
    tool, made it empty. `generated`: the ids after the prompt."""
    ids = [int(i) for i in generated]
    if not ids or ids[0] == tokenizer.eos_id:
        why = f"its first token was {tokenizer.special_tokens['sep_token']}, the end of the text"
    else:
        why = f"only special tokens: {tokenizer.decode(ids[:8], skip_special_tokens=False)}"
    return (f"git-scratch: note: {where}: the model generated no words ({why}); "
            f"the empty {what} is its output, not an error")


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="checkpoint directory, or a hub id such as "
                                                       "microsoft/git-base-coco")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="fp32 (default) is the parity reference; bf16/fp16 halve memory and may "
                             "change a few words")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="image preprocessing to reproduce: torchvision (transformers 5.x, the default "
                             "when the checkpoint's files name none), pil (transformers 4.x) or original "
                             "(microsoft/GenerativeImage2Text; for VQA it keeps the aspect, no crop)")


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-beams", type=positive_int, default=1, help="1 (default) is greedy decoding")
    parser.add_argument("--max-new-tokens", type=positive_int, default=20,
                        help="longest answer in tokens (default 20)")
    parser.add_argument("--length-penalty", type=float, metavar="ALPHA",
                        help="beam search's length penalty (default 1.0); the original GIT used 0.6 with 4 beams")
    parser.add_argument("--semantics", choices=SEMANTICS, default="transformers",
                        help="whose decoding rules to reproduce: transformers (default, >= 4.50), "
                             "transformers<4.50, transformers<4.29 (beam search) or original (Microsoft's "
                             "GenerativeImage2Text: greedy and beam search; docs/generation.md)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text (eval: one JSON object)")


def decoding(args: argparse.Namespace) -> dict[str, Any]:
    """The generate keywords of add_generation_args' flags; a flag not given keeps generate's default."""
    kwargs = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens, "semantics": args.semantics}
    if args.length_penalty is not None:
        kwargs["length_penalty"] = args.length_penalty
    return kwargs


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def one_line(error: BaseException) -> str:
    return " ".join(str(error).splitlines()) or type(error).__name__
