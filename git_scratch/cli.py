"""The `git-scratch` command line: thin subcommands over the library.

    git-scratch caption MODEL FILE...               one caption per image or video, in input order
    git-scratch vqa MODEL FILE --question Q ...     answers about one image or video, encoded once
    git-scratch convert SRC DST [--force]           any official layout -> config.json + model.safetensors
    git-scratch info MODEL_OR_PRESET                config summary and parameter counts

A subcommand is a pair `add_<name>_args(parser)` / `run_<name>(args) -> int` listed in COMMANDS;
the first line of run_<name>'s docstring is its help. To add one, write the pair and list it.

MODEL is a checkpoint directory in the official layout (config.json, weights, tokenizer and
preprocessor files), or a hub id such as microsoft/git-base-coco when huggingface_hub can find
it in its cache or download it.

User mistakes are raised as ValueError, FileNotFoundError or FileExistsError and printed by
`main` as one line, `git-scratch: error: ...`, on stderr, as is any other OSError (permissions,
a full disk). Any other exception is a bug and keeps its traceback (docs/errors.md lists the
errors). Exit codes: 0 success, 1 some files of a caption batch failed (the others were
captioned) or a parity stage failed, 2 a user error (nothing done), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .atomic import atomic_directory
from .config import GitConfig, preset_names
from .convert import read_hf_config, write_model_files
from .model import GIT
from .processor import CONFIG_NAME as PREPROCESSOR_CONFIG
from .processor import ImageProcessor, load_image, sniff_media
from .tokenizer import GitTokenizer
from .video import load_video_frames, preprocess_video

log = logging.getLogger(__name__)

# fp32 is the parity reference (tests/parity/); bf16 and fp16 halve the memory and can change
# a word here and there, because greedy and beam search follow argmaxes that rounding can flip.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Everything besides the weights that makes a checkpoint directory usable; convert copies these.
COMPANION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "preprocessor_config.json", "generation_config.json")
# owner/name as the hub spells repository ids; a relative path of that shape that exists wins.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_FILES = ["*.json", "vocab.txt", "*.safetensors"]


# --- caption -----------------------------------------------------------------------------------


def add_caption_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="images or videos, told apart by content (not extension)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="images per forward pass (default 8); videos go one at a time")
    add_generation_args(parser)


def run_caption(args: argparse.Namespace) -> int:
    """Caption images and videos: one line per file, FILE<TAB>caption, in input order.

    A file that cannot be read (missing, not an image or video, corrupt, a video given to an
    image model) is reported on stderr and the others are still captioned; the exit code is
    then 1. A video model given an image captions it as a single image (4-D pixel_values), as
    GIT itself allows: no temporal embedding is added.
    """
    results: dict[int, str | Exception] = {}  # file index -> caption, or why it has none
    kinds: dict[int, str] = {}
    for i, path in enumerate(args.files):
        try:
            kinds[i] = sniff_media(path)
        except (ValueError, OSError) as e:
            results[i] = e
    pipe = load_pipeline(args)
    check_prompt_length(1, args.max_new_tokens, pipe.model.cfg)
    printer = InOrder(args.files, args.json)
    units = work_units(kinds, args.batch_size)
    log.info("%d images and %d videos in %d forward passes", sum(k == "image" for k in kinds.values()),
             sum(k == "video" for k in kinds.values()), len(units))
    # disable=None hides the bar when stderr is not a terminal (pipes, logs, tests).
    with tqdm(total=len(kinds), desc="captioning", unit="file", disable=None if len(units) > 1 else True) as bar:
        printer.flush(results)
        for unit in units:
            pixels: dict[int, torch.Tensor] = {}
            for i in unit:
                try:
                    pixels[i] = load_pixels(args.files[i], kinds[i], pipe)
                except (ValueError, OSError) as e:
                    results[i] = e
            if pixels:
                ids = pipe.model.generate(torch.cat(list(pixels.values())), max_new_tokens=args.max_new_tokens,
                                          num_beams=args.num_beams)
                # generate's default prompt is [CLS] alone: one token before the caption.
                results.update(zip(pixels, (pipe.tokenizer.decode_answer(row, 1) for row in ids)))
            bar.update(len(unit))
            printer.flush(results)
    return 1 if any(isinstance(r, Exception) for r in results.values()) else 0


def work_units(kinds: dict[int, str], batch_size: int) -> list[list[int]]:
    """File indices per forward pass: images in input order, `batch_size` at a time; each video
    alone. Sorted by first index, so the in-order printer never holds many lines back."""
    images = [i for i, kind in kinds.items() if kind == "image"]
    units = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
    units += [[i] for i, kind in kinds.items() if kind == "video"]
    return sorted(units)


class InOrder:
    """Prints each file's result as soon as every earlier file has one: captions on stdout,
    errors on stderr. tqdm.write keeps a progress bar on the terminal intact."""

    def __init__(self, files: list[str], as_json: bool) -> None:
        self.files, self.as_json = files, as_json
        self.next = 0

    def flush(self, results: dict[int, str | Exception]) -> None:
        while self.next in results:
            path, result = self.files[self.next], results[self.next]
            if isinstance(result, Exception):
                tqdm.write(f"git-scratch: error: {naming(path, result)}", file=sys.stderr)
            elif self.as_json:
                tqdm.write(json.dumps({"file": path, "caption": result}, ensure_ascii=False), file=sys.stdout)
            else:
                tqdm.write(f"{path}\t{result}", file=sys.stdout)
            self.next += 1


def naming(path: str, error: Exception) -> str:
    """The error's message, prefixed with the file unless it already names it."""
    message = one_line(error)
    return message if path in message else f"{path}: {message}"


# --- vqa -----------------------------------------------------------------------------------------


def add_vqa_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("file", metavar="FILE", help="one image or video")
    parser.add_argument("--question", "-q", action="append", required=True,
                        help="a question about FILE; repeat for more (all share one image encoding)")
    add_generation_args(parser)


def run_vqa(args: argparse.Namespace) -> int:
    """Answer questions about one image or video: one line per question, Q<TAB>answer."""
    kind = sniff_media(args.file)
    pipe = load_pipeline(args)
    prompts = [question_ids(pipe.tokenizer, question) for question in args.question]
    for question, prompt in zip(args.question, prompts):
        check_prompt_length(len(prompt), args.max_new_tokens, pipe.model.cfg, question)
    pixel_values = load_pixels(args.file, kind, pipe)
    ids = pipe.model.answer(pixel_values, prompts, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    width = max(len(prompt) for prompt in prompts)  # answer() left-pads every prompt to this
    for question, row in zip(args.question, ids):
        answer = pipe.tokenizer.decode_answer(row, width)
        record = {"file": args.file, "question": question, "answer": answer}
        print(json.dumps(record, ensure_ascii=False) if args.json else f"{question}\t{answer}")
    return 0


def question_ids(tokenizer: GitTokenizer, question: str) -> list[int]:
    """[CLS] + the question's tokens. A question with no tokens would silently ask for a caption."""
    try:
        ids = tokenizer.prompt_ids(question)
    except ValueError as e:  # bytes in another encoding on the command line
        raise ValueError(f"question {shorten(question)!r}: {e}") from None
    if len(ids) == 1:
        raise ValueError(f"question {shorten(question)!r} has no words; ask something, or use "
                         "git-scratch caption for a caption")
    return ids


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- convert -------------------------------------------------------------------------------------


def add_convert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="checkpoint directory in any official layout (model.safetensors, sharded, "
                             "pytorch_model.bin), or a hub id")
    parser.add_argument("dst", metavar="DST", help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="dtype of the saved weights (default fp32, the parity reference)")


def run_convert(args: argparse.Namespace) -> int:
    """Rewrite a checkpoint as config.json + model.safetensors, with its tokenizer files.

    The tokenizer, preprocessor and generation files of SRC are copied along. Everything lands
    in DST together or not at all; an existing DST is replaced only with --force.
    """
    src = resolve_model(args.src)
    writer = atomic_directory(Path(args.dst), force=args.force)  # refuses DST before the slow load
    model = GIT.from_pretrained(src, dtype=DTYPES[args.dtype])
    companions = [src / name for name in COMPANION_FILES if (src / name).is_file()]
    if not companions:
        log.warning("%s has no tokenizer or preprocessor files; caption and vqa will need them in %s",
                    src, args.dst)
    with writer as tmp:  # the weights and the copied files appear at DST in one rename
        write_model_files(model, tmp)
        for file in companions:
            shutil.copyfile(file, tmp / file.name)
    names = ["config.json", "model.safetensors", *(file.name for file in companions)]
    print(f"{args.dst}: {', '.join(names)} ({args.dtype}, {count(model):,} parameters)")
    return 0


# --- info ------------------------------------------------------------------------------------------


def add_info_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_PRESET",
                        help=f"checkpoint directory, hub id, or preset ({', '.join(preset_names())})")


def run_info(args: argparse.Namespace) -> int:
    """Print a checkpoint's or preset's configuration and parameter counts."""
    cfg, source = load_config(args.model)
    with torch.device("meta"):  # shapes only: no memory, no weights needed
        model = GIT(cfg)
    vision, projection, total = count(model.vision), count(model.image_proj), count(model)
    v = cfg.vision
    frames = f"video of {cfg.n_frames} frames -> {cfg.n_image_tokens} tokens" if cfg.n_frames else "images only"
    print(f"{args.model} ({source})")
    print(f"  decoder     {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads, d_ff {cfg.d_ff} "
          f"({cfg.act}), vocab {cfg.vocab_size}, {cfg.max_positions} text positions")
    print(f"  vision      ViT {v.n_layer} layers, d_model {v.d_model}, {v.n_head} heads, d_ff {v.d_ff} "
          f"({v.act}), {v.patch_size}-px patches at {v.image_size} px")
    print(f"  inputs      {v.n_tokens} tokens per image; {frames}")
    print(f"  tokens      bos {cfg.bos_id}, eos {cfg.eos_id}, pad {cfg.pad_id}; "
          f"LM head tied to word embeddings: {'yes' if cfg.tie_embeddings else 'no'}")
    print("parameters")
    for name, n in (("vision", vision), ("projection", projection), ("decoder", total - vision - projection),
                    ("total", total)):
        print(f"  {name:<11} {n:>13,}  {n / 1e6:8.1f}M")
    return 0


def load_config(name: str) -> tuple[GitConfig, str]:
    """A preset by name, unless a local path of that name exists; else a checkpoint's config.json."""
    if name in preset_names() and not Path(name).exists():
        return GitConfig.from_name(name), f"preset configs/{name}.json"
    try:
        directory = resolve_model(name)
    except FileNotFoundError:
        if "/" in name:
            raise
        raise FileNotFoundError(f"{name} is neither a checkpoint directory nor a preset; presets: "
                                f"{', '.join(preset_names())}") from None
    return read_hf_config(directory / "config.json"), str(directory / "config.json")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a tied weight is listed once


# --- loading a checkpoint ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """A loaded checkpoint: the model and what turns files and text into its inputs."""

    name: str
    model: GIT
    tokenizer: GitTokenizer
    processor: ImageProcessor


def load_pipeline(args: argparse.Namespace) -> Pipeline:
    device = parse_device(args.device)
    directory = resolve_model(args.model)
    tokenizer = GitTokenizer.from_pretrained(directory)  # before the weights: fails fast when absent
    start = time.perf_counter()
    model = GIT.from_pretrained(directory, dtype=DTYPES[args.dtype], device=device)
    log.info("loaded %s (%s, %s) in %.1f s", directory, args.dtype, device, time.perf_counter() - start)
    check_tokenizer(tokenizer, model.cfg, directory)
    # Official checkpoints ship preprocessor_config.json and it is used as it is, even at another
    # size than the ViT's (GIT interpolates its position table); without one, CLIP preprocessing
    # at the size the ViT was trained for.
    has_config = (directory / PREPROCESSOR_CONFIG).is_file()
    processor = ImageProcessor.from_pretrained(directory, None if has_config else model.cfg.vision.image_size)
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
        image = load_image(path, processor.size if processor.do_resize else None)
        return processor.preprocess(image)[None]
    n_frames = pipe.model.cfg.n_frames
    if n_frames is None:
        raise ValueError(f"{path} is a video but {pipe.name} is an image model (no temporal embeddings); "
                         "use a video checkpoint such as microsoft/git-base-vatex")
    return preprocess_video(load_video_frames(path, n_frames), processor)[None]


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


# --- shared arguments and output ---------------------------------------------------------------


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="checkpoint directory, or a hub id such as "
                                                       "microsoft/git-base-coco")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="fp32 (default) is the parity reference; bf16/fp16 halve memory and may "
                             "change a few words")


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-beams", type=positive_int, default=1, help="1 (default) is greedy decoding")
    parser.add_argument("--max-new-tokens", type=positive_int, default=20,
                        help="longest answer in tokens (default 20)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text")


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


# --- demo, train, eval ------------------------------------------------------------------------------


def add_demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--steps", type=positive_int, help="training steps (default: configs/train/shapes-demo.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="replace --out even if the demo did not make it")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")


def run_demo(args: argparse.Namespace) -> int:
    """Train a small GIT from scratch on synthetic shapes, then caption held-out images."""
    from .demo import report, run_demo as demo

    parse_device(args.device)
    result = demo(args.out, steps=args.steps, seed=args.seed, device=args.device, force=args.force,
                  progress=sys.stderr.isatty())
    print(report(result))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "train_config"}))
    return 0


def add_train_args(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    parser.add_argument("--config", help="a training config JSON (e.g. configs/train/shapes-demo.json); "
                                         "flags below override its fields")
    parser.add_argument("--force", action="store_true", help="start over in an --out-dir that holds a run")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=argparse.SUPPRESS, metavar=("B1", "B2"))
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"default: {f.default}")


def run_train(args: argparse.Namespace) -> int:
    """Fine-tune a checkpoint (--init) or train from a preset (--model, --tokenizer) on a manifest."""
    from .train import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: tuple(v) if k == "betas" else v for k, v in vars(args).items() if k in fields}
    cfg = TrainConfig.load(args.config, **overrides) if args.config else TrainConfig(**overrides)
    if not cfg.train_manifest:
        raise ValueError("no training data: pass --train-manifest FILE.jsonl (or set it in --config)")
    parse_device(cfg.device)
    previous = [name for name in ("checkpoints", "model", "metrics.jsonl") if (Path(cfg.out_dir) / name).exists()]
    if previous and not cfg.resume:
        if not args.force:
            raise FileExistsError(f"{cfg.out_dir} already holds a training run ({', '.join(previous)}); pass "
                                  "--resume to continue it, --force to replace it, or choose another --out-dir")
        # The old run's later steps would outrank the new run's checkpoints in keep_last and --resume.
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
    result = train(cfg, progress=sys.stderr.isatty())
    print(f"trained to step {result['steps']}, final loss {result['final_loss']:.4f}; model in {result['model_dir']}")
    return 0


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("manifest", help="JSONL manifest of captions and/or questions")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    add_generation_args(parser)


def run_eval(args: argparse.Namespace) -> int:
    """Score a model on a manifest: caption exact match, BLEU-4, CIDEr-D; VQAv2 accuracy. Prints JSON."""
    from .evaluate import evaluate

    pipe = load_pipeline(args)
    result = evaluate(pipe.model, pipe.tokenizer, pipe.processor, args.manifest, batch_size=args.batch_size,
                      num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, progress=sys.stderr.isatty())
    print(json.dumps(result))
    return 0


def add_mask_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-tokens", type=positive_int, default=4, help="image tokens per frame")
    parser.add_argument("--text-tokens", type=positive_int, default=4)
    parser.add_argument("--frames", type=positive_int, default=1)
    parser.add_argument("--left-pad", type=int, default=0, help="how many of the text tokens are padding")
    parser.add_argument("--out", default="mask.png", help="PNG to write (default: mask.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run_mask(args: argparse.Namespace) -> int:
    """Draw GIT's attention mask, blocks labelled, as a PNG (built by mask.py itself)."""
    from .pictures import draw_mask

    draw_mask(Path(args.out), n_image=args.image_tokens, n_text=args.text_tokens, frames=args.frames,
              left_pad=args.left_pad, force=args.force)
    print(args.out)
    return 0


# --- parity ----------------------------------------------------------------------------------------


def add_parity_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?", help="checkpoint directory or hub id (or --preset)")
    parser.add_argument("--preset", choices=preset_names(), metavar="NAME",
                        help="random weights of a preset's shape instead of MODEL, offline (e.g. git-base)")
    parser.add_argument("--image", help="image file (default: a generated image)")
    parser.add_argument("--text", help="text after [CLS], also the generation prompt (default: random ids "
                                       "for the forward pass, [CLS] alone for generation)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="both models in this dtype; the tolerance follows it (docs/parity.md)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights, image and ids")
    parser.add_argument("--num-beams", type=positive_int, default=3, help="beams of the beam-search row (default 3)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=10, help="tokens to generate (default 10)")
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")


def run_parity(args: argparse.Namespace) -> int:
    """Compare git_scratch with transformers' GitForCausalLM, stage by stage, on one checkpoint.

    The same weights are loaded by both, the same inputs run through both, and a table compares
    every stage from the patch embedding to the generated tokens (docs/parity.md). --preset NAME
    saves random weights of that shape as a checkpoint first, so it runs offline. Exit code 1
    when any stage fails.
    """
    from . import parity

    if (args.model is None) == (args.preset is None):
        raise ValueError("git-scratch parity takes MODEL or --preset NAME, not both and not neither; pass one")
    transformers = parity.import_transformers()  # before any work: one line if it is missing
    transformers.utils.logging.disable_progress_bar()
    device = parse_device(args.device)
    if args.preset:
        source = parity.preset_checkpoint(args.preset, args.seed)
    else:
        source = contextlib.nullcontext(resolve_model(args.model))
    with source as directory:
        report = parity.parity_report(directory, dtype=DTYPES[args.dtype], device=device, image=args.image,
                                      text=args.text, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                      num_beams=args.num_beams)
    if args.preset:
        report["model"] = f"--preset {args.preset} (random weights, seed {args.seed})"
    print(json.dumps(report) if args.json else parity.format_report(report))
    return 0 if report["passed"] else 1


# --- attention -------------------------------------------------------------------------------------


def add_attention_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("image", metavar="IMAGE", help="an image file, any size (the checkpoint's processor "
                                                       "resizes and crops it; the picture shows what the model saw)")
    parser.add_argument("--text", help="prompt after [CLS]: a question, or the start of a caption")
    parser.add_argument("--layer", help="decoder layer N (from 0; default: the last), or all (one row each)")
    parser.add_argument("--rollout", action="store_true", help="attention rolled out across all decoder layers")
    parser.add_argument("--max-new-tokens", type=positive_int, default=20, help="longest answer (default 20)")
    parser.add_argument("--out", "-o", default="attention.png", help="PNG to write (default: attention.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run_attention(args: argparse.Namespace) -> int:
    """Draw where each generated token looks in the image: text-to-image attention on the patch grid.

    One panel per generated token, titled with the token and the share of its attention that
    falls on the image patches: the attention of the step that chose it, averaged over heads,
    for one decoder layer (--layer N), each layer (--layer all) or rolled out across layers
    (--rollout; the definition is in attention.py). Prints the PNG's path and the answer.
    """
    from .attention import attention_maps
    from .pictures import draw_attention

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it")
    if args.rollout and args.layer is not None:
        raise ValueError("--rollout combines every layer; drop --layer, or drop --rollout to see one layer")
    if sniff_media(args.image) != "image":
        raise ValueError(f"{args.image} is a video; git-scratch attention draws one image, pass an image file")
    pipe = load_pipeline(args)
    cfg, tokenizer = pipe.model.cfg, pipe.tokenizer
    layers = parse_layers(args.layer, cfg.n_layer)
    prompt = question_ids(tokenizer, args.text) if args.text is not None else tokenizer.prompt_ids()
    check_prompt_length(len(prompt), args.max_new_tokens, cfg, args.text)
    pixel_values = load_pixels(args.image, "image", pipe)  # (1, 3, H, W), as caption and vqa see it
    device = pipe.model.lm_head.weight.device
    result = attention_maps(pipe.model, pixel_values.to(device), torch.tensor([prompt], device=device),
                            max_new_tokens=args.max_new_tokens, layers=layers, use_rollout=args.rollout)
    words = [tokenizer.decode([token], skip_special_tokens=False) for token in result.tokens]
    titles = [[f"{word}\n{share:.0%} on image" for word, share in zip(words, row)]
              for row in result.image_share.tolist()]
    answer = tokenizer.decode_answer(prompt + result.tokens, len(prompt))
    what = "rollout across all layers" if args.rollout else "attention averaged over heads"
    heading = (f"{Path(args.image).name}: {args.text + ' → ' if args.text else ''}{answer}\n"
               f"{what}, the step that chose each token; each panel scaled to its maximum")
    draw_attention(out, displayable(pixel_values[0].cpu(), pipe.processor), result.maps.cpu(), titles, result.rows,
                   heading=heading, force=args.force)
    print(f"{out}\t{answer}")
    return 0


def parse_layers(text: str | None, n_layer: int) -> list[int] | None:
    """--layer: None (the last), "all", or one index."""
    if text is None:
        return None
    if text == "all":
        return list(range(n_layer))
    if not text.isdigit() or int(text) >= n_layer:
        raise ValueError(f"--layer {text!r}: the model has decoder layers 0 to {n_layer - 1}; pass one of them or all")
    return [int(text)]


def displayable(pixel_values: torch.Tensor, processor: ImageProcessor) -> torch.Tensor:
    """(3, H, W) normalised -> (3, H, W) in [0, 1]: the processed image, as the model saw it."""
    x = pixel_values.float()
    if processor.do_normalize:
        x = x * torch.tensor(processor.std)[:, None, None] + torch.tensor(processor.mean)[:, None, None]
    if not processor.do_rescale:
        x = x * (1 / 255)
    return x


# --- the table and the entry point -------------------------------------------------------------

# name -> (add_<name>_args, run_<name>)
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "caption": (add_caption_args, run_caption),
    "vqa": (add_vqa_args, run_vqa),
    "convert": (add_convert_args, run_convert),
    "info": (add_info_args, run_info),
    "demo": (add_demo_args, run_demo),
    "train": (add_train_args, run_train),
    "eval": (add_eval_args, run_eval),
    "mask": (add_mask_args, run_mask),
    "parity": (add_parity_args, run_parity),
    "attention": (add_attention_args, run_attention),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="git-scratch", description="GIT (GenerativeImage2Text) from scratch.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show progress messages (logging)")
    # --verbose is accepted after the subcommand too; SUPPRESS keeps an absent one from
    # overwriting a --verbose given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="show progress messages (logging)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_args, run) in COMMANDS.items():
        doc = inspect.cleandoc(run.__doc__ or "")
        sub = subparsers.add_parser(name, parents=[common], help=doc.splitlines()[0] if doc else None,
                                    description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("git_scratch").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("git-scratch: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # OSError: FileNotFoundError, FileExistsError, permissions, a full disk
        print(f"git-scratch: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
