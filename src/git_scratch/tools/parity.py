"""`git-scratch parity`: the same weights in git_scratch and in transformers' GitForCausalLM,
the same inputs, compared stage by stage.

    load      one checkpoint directory, read by our converter and by transformers' from_pretrained
    inputs    one image (a seeded generated one, or a file through the checkpoint's processor),
              [CLS] + a text (or seeded random ids), and the generation prompt
    record    forward hooks on both models, placed only for the forward pass (`recording`)
    compare   max abs diff, max rel diff, cosine and pass/fail per stage; then the tokens of
              greedy and beam search

The stages, in the order data flows through them: patch embedding (+ class and position
embeddings), each vision layer, the vision post-LayerNorm, the projection, the text embeddings,
each decoder layer, the text logits, the loss, the greedy tokens, the beam-search tokens.

transformers is imported here only, inside the functions that need it: nothing else in
git_scratch imports it. References: transformers/models/git/modeling_git.py for the hook
points; tests/parity/ for the same comparisons as tests.

Letters: B batch (1 here), F frames, n tokens per frame, N image tokens, T text tokens, D width.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..checkpoints.hub import config_to_hf
from ..config import GitConfig
from ..data.processor import ImageProcessor
from ..data.processor_config import find_settings
from ..data.tokenizer import GitTokenizer
from ..model.git import GIT, git_loss


@dataclass(frozen=True)
class Tolerance:
    """A stage passes when max |ours - theirs| <= atol + rtol * max |theirs|.

    Relative to the stage's largest value, not element by element: rounding errors of a matmul
    scale with the size of the whole tensor, and a near-zero element would make an elementwise
    relative error meaningless."""

    atol: float
    rtol: float


# Measured with `--preset git-base` (docs/parity.md): the largest difference of any stage was
# 1.4e-6 of its scale in fp32 (rtol 1e-5, the tests' figure, leaves 7x), 2.8e-3 in fp16 and
# 2.2e-2 in bf16, a few roundings of 2^-11 and 2^-8: the two implementations round in
# different places. The half-precision rtols are about twenty roundings, 3.5x what was measured.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(atol=1e-5, rtol=1e-5),
    torch.float16: Tolerance(atol=1e-3, rtol=1e-2),
    torch.bfloat16: Tolerance(atol=1e-2, rtol=8e-2),
}


@dataclass(frozen=True)
class Stage:
    """One row of the report. Tensor stages fill the three numbers; token stages fill the two
    token lists. `passed` is None for a row that informs without failing (half-precision tokens)."""

    name: str
    passed: bool | None
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    ours: list[int] | None = None
    theirs: list[int] | None = None


@dataclass(frozen=True)
class Inputs:
    pixel_values: torch.Tensor  # (1, 3, H, W) or (1, F, 3, H, W)
    input_ids: torch.Tensor  # (1, T): [CLS] + text, for logits and loss (labels = input_ids)
    prompt_ids: torch.Tensor  # (1, T0): the generation prompt, [CLS] (+ the text when given)


# --- loading ---------------------------------------------------------------------------------------


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        # "test" is the extra of pyproject.toml that brings transformers.
        raise ValueError("git-scratch parity compares with transformers, which is not installed; "
                         "install the test extra: pip install -e '.[test]'") from None
    return transformers


def comparable_init(width: int) -> float:
    """The std of random weights for `--preset`: 2 / sqrt(width), so that queries and keys of
    LayerNorm-ed inputs have entries of std ~2 at any width. On git-base, text queries in decoder
    layer 0 then put a median 0.24 of their attention on one key (uniform over the image would be
    0.005), while fp32 differences stay near 1e-6 of each stage's scale (docs/parity.md). The
    checkpoints' own 0.02 would make every softmax nearly uniform, and a wrong weight could hide."""
    return 2.0 / math.sqrt(width)


def random_checkpoint(preset: str, directory: Path, seed: int = 0) -> Path:
    """A random transformers GitForCausalLM of a preset's shape, saved as an official checkpoint
    (save_pretrained, safetensors): the path a downloaded checkpoint takes through both loaders."""
    transformers = import_transformers()
    cfg = GitConfig.from_name(preset)
    data = config_to_hf(cfg)
    data["initializer_range"] = comparable_init(cfg.d_model)
    data["vision_config"]["initializer_range"] = comparable_init(cfg.vision.d_model)
    torch.manual_seed(seed)
    hf = transformers.GitForCausalLM(transformers.GitConfig(**data))
    if cfg.n_frames:  # zeros at init in transformers; random ones make a frame mix-up visible
        with torch.no_grad():
            for embedding in hf.git.img_temporal_embedding:
                embedding.normal_(std=comparable_init(cfg.vision.d_model))
    hf.save_pretrained(directory, safe_serialization=True)
    return directory


def load_ours(directory: Path, dtype: torch.dtype, device: torch.device) -> GIT:
    return GIT.from_pretrained(directory, dtype=dtype, device=device)


def load_theirs(directory: Path, dtype: torch.dtype, device: torch.device) -> nn.Module:
    transformers = import_transformers()
    return transformers.GitForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()


def make_inputs(directory: Path, cfg: GitConfig, *, image: str | None = None, text: str | None = None,
                seed: int = 0, n_random_ids: int = 7) -> Inputs:
    """The checkpoint's processor and tokenizer when it has them. Without a tokenizer (a preset),
    the text is `n_random_ids` seeded random ids and the prompt [CLS]."""
    rng = np.random.default_rng(seed)
    has_processor = find_settings(directory) is not None  # preprocessor_config.json, or 5.x's processor_config.json
    processor = ImageProcessor.from_pretrained(directory, None if has_processor else cfg.vision.image_size)
    if image is None:
        picture = generated_image(rng, processor.crop_size)
    else:
        picture = processor.load(image)
    pixel_values = processor.preprocess(picture)[None]  # (1, 3, H, W)
    if cfg.n_frames:  # a video model: the same picture in every frame, each gets its own temporal embedding
        pixel_values = pixel_values[:, None].expand(-1, cfg.n_frames, -1, -1, -1)  # (1, F, 3, H, W)
    has_tokenizer = any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt"))
    if text is not None and not has_tokenizer:
        raise ValueError(f"--text needs a tokenizer but {directory} has no tokenizer.json or vocab.txt; "
                         "omit --text (random token ids are used) or pass a checkpoint with its tokenizer")
    if text is not None:
        prompt = GitTokenizer.from_pretrained(directory).prompt_ids(text)
        if len(prompt) == 1:  # [CLS] alone has no next token to score: the loss would be NaN
            raise ValueError(f"--text {text!r} has no tokens; pass some words, or omit --text")
        ids = prompt
    else:
        prompt = [cfg.bos_id]
        ids = prompt + rng.integers(0, cfg.vocab_size, n_random_ids).tolist()
    if len(ids) > cfg.max_positions:
        raise ValueError(f"--text is {len(ids)} tokens with [CLS], more than the model's {cfg.max_positions} "
                         "text positions; shorten it")
    return Inputs(pixel_values, torch.tensor([ids]), torch.tensor([prompt]))


def generated_image(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth random colours: an 8 x 8 grid of random pixels, bicubically enlarged."""
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC)


# --- recording stages with hooks -------------------------------------------------------------------

# A stage is read at a module's input or output: (module, "input" | "output").
Point = tuple[nn.Module, str]


def our_points(model: GIT) -> dict[str, Point]:
    vit = model.vision.vit
    blocks = vit.transformer.resblocks
    points: dict[str, Point] = {"patch embedding": (vit.ln_pre, "input")}  # conv + class + position
    points |= {f"vision layer {i}": (block, "output") for i, block in enumerate(blocks)}
    points["vision post-LayerNorm"] = (vit.ln_post, "output")
    points["projection"] = (model.image_proj, "output")
    points["text embeddings"] = (model.embed, "output")
    points |= {f"decoder layer {i}": (block, "output") for i, block in enumerate(model.blocks)}
    return points


def their_points(hf: nn.Module) -> dict[str, Point]:
    vision = hf.git.image_encoder.vision_model
    points: dict[str, Point] = {"patch embedding": (vision.embeddings, "output")}
    points |= {f"vision layer {i}": (layer, "output") for i, layer in enumerate(vision.encoder.layers)}
    points["vision post-LayerNorm"] = (vision.post_layernorm, "output")
    points["projection"] = (hf.git.visual_projection, "output")
    points["text embeddings"] = (hf.git.embeddings, "output")
    points |= {f"decoder layer {i}": (layer, "output") for i, layer in enumerate(hf.git.encoder.layer)}
    return points


@contextmanager
def recording(points: dict[str, Point]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Hooks that append each stage's tensor to `seen[name]` (one entry per call), removed on exit
    so that generation runs unhooked. Copies, not views: transformers adds the temporal embedding
    of a video frame in place to the output of its post-LayerNorm."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in points}
    handles = []
    for name, (module, where) in points.items():
        def keep(value: Any, name: str = name) -> None:
            seen[name].append((value[0] if isinstance(value, tuple) else value).detach().clone())

        if where == "input":
            handles.append(module.register_forward_pre_hook(lambda _m, args, keep=keep: keep(args)))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, out, keep=keep: keep(out)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def one_tensor(calls: list[torch.Tensor]) -> torch.Tensor:
    """transformers runs its vision tower once per frame, (B, n, D) each; ours runs all frames at
    once, (B*F, n, D) in (b f) order. Stack the per-frame calls into that order."""
    if len(calls) == 1:
        return calls[0]
    return torch.stack(calls, dim=1).flatten(0, 1)  # (B, F, n, D) -> (B*F, n, D)


# --- comparing -------------------------------------------------------------------------------------


def compare_tensors(name: str, ours: torch.Tensor, theirs: torch.Tensor, tol: Tolerance) -> Stage:
    """max abs diff; max rel diff = max abs diff / max |theirs|; cosine of the flattened tensors."""
    if ours.shape != theirs.shape:
        return Stage(name, False)
    a, b = ours.double().flatten(), theirs.double().flatten()
    max_abs = float((a - b).abs().max())
    scale = float(b.abs().max())
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    passed = math.isfinite(max_abs) and max_abs <= tol.atol + tol.rtol * scale
    return Stage(name, passed, max_abs, max_abs / scale if scale else math.inf, cosine)


def compare(ours: GIT, theirs: nn.Module, inputs: Inputs, *, tol: Tolerance, exact_tokens: bool = True,
            max_new_tokens: int = 10, num_beams: int = 3) -> list[Stage]:
    """Every stage of one forward pass, then greedy and beam-search tokens. With
    exact_tokens=False (half precision) differing tokens are reported but do not fail: a near-tie
    between the two best tokens can flip with rounding (docs/parity.md)."""
    transformers = import_transformers()
    device = ours.lm_head.weight.device
    pixel_values = inputs.pixel_values.to(device=device, dtype=ours.lm_head.weight.dtype)
    input_ids, prompt_ids = inputs.input_ids.to(device), inputs.prompt_ids.to(device)
    # transformers refuses another resolution unless told to interpolate; ours always interpolates.
    extra = {"interpolate_pos_encoding": True} if pixel_values.shape[-1] != ours.cfg.vision.image_size else {}
    with torch.no_grad():
        with recording(our_points(ours)) as seen_ours:
            logits = ours(pixel_values, input_ids)  # (1, T, V)
        with recording(their_points(theirs)) as seen_theirs:
            out = theirs(pixel_values=pixel_values, input_ids=input_ids, labels=input_ids, **extra)
    stages = [compare_tensors(name, one_tensor(seen_ours[name]), one_tensor(seen_theirs[name]), tol)
              for name in seen_ours]
    stages.append(compare_tensors("logits", logits.float(), out.logits[:, -input_ids.shape[1]:].float(), tol))
    stages.append(compare_tensors("loss", git_loss(logits, input_ids), out.loss.float(), tol))

    cfg = ours.cfg
    for name, beams in (("greedy tokens", 1), (f"beam tokens ({num_beams} beams)", num_beams)):
        # A fresh GenerationConfig: a checkpoint's generation_config.json (repetition penalties,
        # lengths) must not apply to one side only.
        gen = transformers.GenerationConfig(bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id, pad_token_id=cfg.pad_id,
                                            max_new_tokens=max_new_tokens, num_beams=beams, do_sample=False,
                                            length_penalty=1.0, early_stopping=False)
        with torch.no_grad():
            mine = ours.generate(pixel_values, prompt_ids, max_new_tokens=max_new_tokens, num_beams=beams)
            their = theirs.generate(pixel_values=pixel_values, input_ids=prompt_ids, generation_config=gen, **extra)
        same = torch.equal(mine.cpu(), their.cpu())
        stages.append(Stage(name, same if exact_tokens or same else None, ours=mine[0].tolist(),
                            theirs=their[0].tolist()))
    return stages


def parity_report(directory: Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  image: str | None = None, text: str | None = None, seed: int = 0,
                  max_new_tokens: int = 10, num_beams: int = 3) -> dict[str, Any]:
    """Load `directory` on both sides and compare. Returns the report as a JSON-ready dict."""
    device = torch.device(device)
    ours = load_ours(directory, dtype, device)
    theirs = load_theirs(directory, dtype, device)
    inputs = make_inputs(directory, ours.cfg, image=image, text=text, seed=seed)
    tol = TOLERANCES[dtype]
    stages = compare(ours, theirs, inputs, tol=tol, exact_tokens=dtype == torch.float32,
                     max_new_tokens=max_new_tokens, num_beams=num_beams)
    return {
        "model": str(directory), "dtype": str(dtype).removeprefix("torch."), "device": str(device),
        "tolerance": asdict(tol),
        "input_ids": inputs.input_ids[0].tolist(), "prompt_ids": inputs.prompt_ids[0].tolist(),
        "pixel_values_shape": list(inputs.pixel_values.shape),
        "stages": [asdict(stage) for stage in stages],
        "passed": all(stage.passed is not False for stage in stages),
    }


@contextmanager
def preset_checkpoint(preset: str, seed: int = 0) -> Iterator[Path]:
    """A random checkpoint of a preset's shape in a temporary directory, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"parity-{preset}-") as tmp:
        yield random_checkpoint(preset, Path(tmp), seed)


# --- the table -------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    tol = report["tolerance"]
    lines = [f"{report['model']}  ({report['dtype']}, {report['device']}; pass: max abs diff <= "
             f"{tol['atol']:g} + {tol['rtol']:g} * max |transformers|)",
             f"{'stage':<28} {'max abs diff':>12} {'max rel diff':>12} {'cosine':>12}  result"]
    for s in report["stages"]:
        result = {True: "pass", False: "FAIL", None: "differ (not a failure in half precision)"}[s["passed"]]
        if s["ours"] is not None:
            lines.append(f"{s['name']:<28} {tokens_line(s['ours'], s['theirs']):<38}  {result}")
        elif s["max_abs"] is None:
            lines.append(f"{s['name']:<28} {'shapes differ':<38}  {result}")
        else:
            lines.append(f"{s['name']:<28} {s['max_abs']:>12.2e} {s['max_rel']:>12.2e} {s['cosine']:>12.8f}  {result}")
    failed = [s["name"] for s in report["stages"] if s["passed"] is False]
    lines.append(f"FAILED from: {failed[0]} ({len(failed)} stages fail)" if failed else "all stages pass")
    return "\n".join(lines)


def tokens_line(ours: list[int], theirs: list[int]) -> str:
    if ours == theirs:
        return f"identical, {len(ours)} ids: {' '.join(map(str, ours))}"
    return f"ours {' '.join(map(str, ours))} | transformers {' '.join(map(str, theirs))}"
