"""The explorer's state and every operation of its API as a method returning plain dicts: the
loaded model, the uploaded media (kept as files, pixel values and image prefix), the generated
sequences, and the attention of the last few sequences looked at. No HTTP here (server.py);
tests call these methods directly too.

One lock serialises every method that touches the model or the stores: HTTP threads may call in
concurrently, but two forward passes never run at once (a model's caches and the capture hooks
of tools/attention.py are not made for it, and on a CPU two passes only share the same cores).

Each operation reuses the library's own function: sniff_media and the loaders for uploads,
generate and compute_transition_scores for captions and answers, tools/attention.py's capture for
the maps, tools/pictures.py's draw_mask for the mask, tools/parity.py's report for parity.

Letters: F frames, L layers, H heads, K generated tokens, S image + text tokens.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import math
import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..checkpoints.variant import is_variant
from ..data.processor import ImageProcessor, sniff_media
from ..data.tokenizer import GitTokenizer
from ..data.video import load_video_frames, preprocess_video
from ..generation.outputs import compute_transition_scores
from ..generation.prefix import ImagePrefix, encode_prefix
from ..generation.search import generate
from ..model.git import GIT
from ..tools import parity
from ..tools.attention import Captured, capture, patch_maps
from ..tools.pictures import draw_mask

# What the page's file picker offers; the content decides what a file is (sniff_media), not this.
ACCEPTED = [".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
            ".mp4", ".avi", ".mkv", ".mov", ".webm"]
MAX_UPLOAD_BYTES = 100 * 2**20
# How many of each the explorer keeps, oldest dropped first: media hold their pixel values and
# prefix (a 6-frame git-base clip is ~4 MB of pixels), captures K rows of every layer and head.
KEEP_MEDIA, KEEP_SEQUENCES, KEEP_CAPTURES = 16, 512, 8
MAX_BEAMS = 10


class ApiError(ValueError):
    """A request the explorer refuses: one line naming the value and the fix, and its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Media:
    kind: str  # "image" | "video"
    name: str  # the uploaded file's name, as errors call it
    path: Path  # the bytes as uploaded, under the explorer's temporary directory
    pixel_values: torch.Tensor  # (1, 3, H, W) or (1, F, 3, H, W), on the model's device
    previews: list[bytes]  # one PNG per frame: the model's view, resized and cropped, not normalised
    prefix: ImagePrefix | None = None  # every layer's image keys and values, encoded on first use


@dataclass(frozen=True)
class Generated:
    media_id: str
    prompt: list[int]  # [CLS] (+ the question)
    tokens: list[int]  # the generated ids, through the first EOS


class Explorer:
    def __init__(self, model: GIT, tokenizer: GitTokenizer, processor: ImageProcessor, *, name: str,
                 directory: Path, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.name, self.directory, self.max_upload_bytes = name, Path(directory), max_upload_bytes
        self.device = model.lm_head.weight.device
        self.lock = threading.Lock()
        self.store = Path(tempfile.mkdtemp(prefix="git-scratch-explore-"))
        self.media: OrderedDict[str, Media] = OrderedDict()
        self.sequences: OrderedDict[str, Generated] = OrderedDict()
        self.captures: OrderedDict[str, Captured] = OrderedDict()

    def close(self) -> None:
        """Delete the uploaded files."""
        shutil.rmtree(self.store, ignore_errors=True)

    # --- what the page asks ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        cfg, side = self.model.cfg, self.processor.crop_size
        reason = self.parity_reason()
        return {"model": self.name, "layers": cfg.n_layer, "heads": cfg.n_head,
                "grid": [side // cfg.vision.patch_size] * 2, "image_size": side, "frames": cfg.n_frames or 1,
                "max_upload_bytes": self.max_upload_bytes, "accepted": ACCEPTED, "parity": reason is None,
                "parity_reason": reason}

    def upload(self, data: bytes, filename: str) -> dict[str, Any]:
        """The file's bytes, checked and decoded as the CLI checks files; refusals name `filename`."""
        name = Path(filename.replace("\\", "/")).name or "upload"
        if len(data) > self.max_upload_bytes:
            raise ApiError(f"{name} is {len(data)} bytes, over the explorer's limit of {self.max_upload_bytes}; "
                                "shrink it, or restart with a larger --max-upload-mb", status=413)
        with self.lock:
            media_id = secrets.token_hex(6)
            folder = self.store / media_id
            folder.mkdir()
            # the stored name keeps the extension (FFmpeg guesses some formats from it) and no odd characters
            path = folder / (re.sub(r"[^\w.-]", "_", name)[-100:].lstrip(".") or "upload")
            path.write_bytes(data)
            status = 415  # not an image or video at all; once it is one, a file that fails to decode is 400
            try:
                kind = sniff_media(path)
                status = 400
                media = self.decode(path, kind, name)
            except ValueError as e:  # the loaders' one-line messages, naming the upload instead of our copy
                shutil.rmtree(folder, ignore_errors=True)
                what = str(e).replace(str(path), name)
                raise ApiError(what, getattr(e, "status", status)) from None
            for dropped in remember(self.media, media_id, media, KEEP_MEDIA):
                shutil.rmtree(self.store / dropped, ignore_errors=True)
        return {"media_id": media_id, "kind": kind, "frames": len(media.previews),
                "preview": f"/api/media/{media_id}.png"}

    def preview(self, media_id: str, frame: int = 0) -> bytes:
        with self.lock:
            media = self.find_media(media_id)
        integer(frame, "frame", 0, len(media.previews) - 1)
        return media.previews[frame]

    def caption(self, media_id: str, num_beams: int = 3, max_new_tokens: int = 20) -> dict[str, Any]:
        """The greedy caption and, with num_beams > 1, every beam's, over the media's cached prefix."""
        integer(num_beams, "num_beams", 1, MAX_BEAMS)
        integer(max_new_tokens, "max_new_tokens", 1, self.model.cfg.max_positions - 1)
        prompt = self.tokenizer.prompt_ids()
        with self.lock:
            media = self.find_media(media_id)
            greedy = self.greedy(media_id, media, prompt, max_new_tokens)
            beams = self.beams(media_id, media, prompt, num_beams, max_new_tokens) if num_beams > 1 else []
        return {"greedy": greedy, "beams": beams}

    def answer(self, media_id: str, question: str, max_new_tokens: int = 20) -> dict[str, Any]:
        """Greedy, as GIT.answer decodes one question, over the media's cached prefix."""
        if not isinstance(question, str) or not question.strip():
            raise ApiError(f'"question": {question!r} has no words; ask something, or use /api/caption')
        integer(max_new_tokens, "max_new_tokens", 1, self.model.cfg.max_positions - 1)
        prompt = self.tokenizer.prompt_ids(question)
        if len(prompt) == 1:
            raise ApiError(f'"question": {question!r} has no tokens the tokenizer knows; rephrase it')
        with self.lock:
            return self.greedy(media_id, self.find_media(media_id), prompt, max_new_tokens)

    def attention(self, sequence_id: str, token: int, layer: int | str, head: int | str = "mean",
                  frame: int = 0) -> dict[str, Any]:
        """The attention of the step that chose token `token` of a sequence on one frame's patches,
        as tools/attention.py's attention_maps gives it for that layer and head, or the rollout."""
        cfg = self.model.cfg
        with self.lock:
            generated = self.find_sequence(sequence_id)
            media = self.find_media(generated.media_id)
            integer(token, "token", 0, len(generated.tokens) - 1)
            if layer != "rollout":
                integer(layer, "layer", 0, cfg.n_layer - 1)
            if head != "mean":
                integer(head, "head", 0, cfg.n_head - 1)
                if layer == "rollout":
                    raise ApiError(f'"head": {head}: the rollout is of the mean over heads; pass "head": "mean" '
                                        'with "layer": "rollout", or a layer number')
            integer(frame, "frame", 0, len(media.previews) - 1)  # one preview per frame the model sees
            captured = self.captures.get(sequence_id)
            if captured is None:
                text = torch.tensor([generated.prompt + generated.tokens], device=self.device)  # (1, T)
                captured = capture(self.model, media.pixel_values, text, len(generated.prompt))
            remember(self.captures, sequence_id, captured, KEEP_CAPTURES)
        if layer == "rollout":
            chosen = captured.rollout[None]  # (1, K, S)
        else:
            chosen = captured.mean[[layer]] if head == "mean" else captured.heads[[layer], head]
        maps, share = patch_maps(chosen, captured, frame)  # (1, K, grid_h, grid_w), (1, K)
        chosen_id = generated.tokens[token]
        return {"map": maps[0, token].tolist(), "image_share": share[0, token].item(), "grid": list(captured.grid),
                "frame": frame, "token": {"id": chosen_id, "text": self.token_text(chosen_id)}}

    def mask_png(self, sequence_id: str) -> bytes:
        """`git-scratch mask --model`'s picture for this sequence's image tokens, frames and text."""
        with self.lock:
            generated = self.find_sequence(sequence_id)
            media = self.find_media(generated.media_id)
            pixel_values = media.pixel_values
            frames = pixel_values.shape[1] if pixel_values.dim() == 5 else 1
            patch = self.model.cfg.vision.patch_size
            per_frame = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch) + 1  # grid + CLS
            with tempfile.TemporaryDirectory(dir=self.store) as tmp:
                path = Path(tmp) / "mask.png"
                draw_mask(path, self.model.attention_mask, n_image=per_frame, frames=frames,
                          n_text=len(generated.prompt) + len(generated.tokens),
                          title=f"{self.name}: attention mask of this sequence")
                return path.read_bytes()

    def parity(self, media_id: str) -> dict[str, Any]:
        """tools/parity.py's stage-by-stage report on this image, in fp32 (the parity reference)."""
        what = self.parity_reason()  # its messages name the checkpoint and the fix
        if what is not None:
            raise ApiError(what, status=409)
        with self.lock:
            media = self.find_media(media_id)
            if media.kind != "image":
                raise ApiError(f"{media.name} is a video; parity compares on one image, upload an image")
            report = parity.parity_report(self.directory, device=self.device, image=str(media.path))
        tol = report["tolerance"]
        rows = [parity_row(stage, tol["atol"], tol["rtol"]) for stage in report["stages"]]
        greedy = next(s for s in report["stages"] if s["name"] == "greedy tokens")
        return {"ok": report["passed"], "rows": rows, "tokens": parity.tokens_line(greedy["ours"], greedy["theirs"])}

    def parity_reason(self) -> str | None:
        """Why there is no parity table for this checkpoint, or None when there is one."""
        if is_variant(self.directory):
            return (f"{self.name} is a variant (variant.json, a changed model): transformers has no twin of it; "
                    "parity needs a checkpoint in transformers' layout")
        if not (self.directory / "config.json").is_file():
            return (f"{self.name} has no config.json in transformers' layout, so transformers cannot load a twin; "
                    "convert it with git-scratch convert first")
        if importlib.util.find_spec("transformers") is None:
            return ("parity compares with transformers, which is not installed; "
                    "install the test extra: pip install -e '.[test]'")
        return None

    # --- the pieces ------------------------------------------------------------------------------

    def decode(self, path: Path, kind: str, name: str) -> Media:
        """pixel_values as the caption command makes them (cli/common.load_pixels), and the previews."""
        raw = dataclasses.replace(self.processor, do_rescale=False, do_normalize=False)  # 0-255, resized and cropped
        if kind == "image":
            frames = [self.processor.load(path)]
            pixel_values = self.processor.preprocess(frames[0])[None]  # (1, 3, H, W)
        else:
            n_frames = self.model.cfg.n_frames
            if n_frames is None:
                raise ApiError(f"{name} is a video but {self.name} is an image model (no temporal embeddings); "
                               "upload an image, or explore a video checkpoint such as microsoft/git-base-vatex",
                               status=415)
            frames = load_video_frames(path, n_frames)
            pixel_values = preprocess_video(frames, self.processor)[None]  # (1, F, 3, H, W)
        previews = [png(raw.preprocess(frame)) for frame in frames]
        return Media(kind, name, path, pixel_values.to(self.device), previews)

    def prefix(self, media: Media) -> ImagePrefix:
        if media.prefix is None:
            media.prefix = encode_prefix(self.model, media.pixel_values)
        return media.prefix

    def greedy(self, media_id: str, media: Media, prompt: list[int], max_new_tokens: int) -> dict[str, Any]:
        out = generate(self.model, media.pixel_values, torch.tensor([prompt], device=self.device),
                       prefix=self.prefix(media), max_new_tokens=max_new_tokens, return_dict_in_generate=True,
                       output_scores=True)
        tokens = self.through_eos(out.sequences[0, len(prompt):].tolist())
        log_probs = compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]  # (new,)
        return self.sequence(media_id, prompt, tokens, log_probs[: len(tokens)].sum().item())

    def beams(self, media_id: str, media: Media, prompt: list[int], num_beams: int,
              max_new_tokens: int) -> list[dict[str, Any]]:
        """Every beam's hypothesis, best first, scored as generate's sequences_scores."""
        out = generate(self.model, media.pixel_values, torch.tensor([prompt], device=self.device),
                       prefix=self.prefix(media), max_new_tokens=max_new_tokens, num_beams=num_beams,
                       num_return_sequences=num_beams, return_dict_in_generate=True, output_scores=True)
        return [self.sequence(media_id, prompt, self.through_eos(row[len(prompt):].tolist()), score.item())
                for row, score in zip(out.sequences, out.sequences_scores)]

    def sequence(self, media_id: str, prompt: list[int], tokens: list[int], score: float) -> dict[str, Any]:
        sequence_id = secrets.token_hex(6)
        remember(self.sequences, sequence_id, Generated(media_id, prompt, tokens), KEEP_SEQUENCES)
        return {"sequence_id": sequence_id, "text": self.tokenizer.decode_answer(tokens), "score": score,
                "tokens": [{"id": t, "text": self.token_text(t)} for t in tokens],
                "prompt": self.tokenizer.decode(prompt)}

    def through_eos(self, ids: list[int]) -> list[int]:
        eos = self.model.cfg.eos_id
        return ids[: ids.index(eos) + 1] if eos in ids else ids

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def find_media(self, media_id: Any) -> Media:
        if not isinstance(media_id, str) or media_id not in self.media:
            raise ApiError(f'"media_id": {media_id!r} is not one of the last {KEEP_MEDIA} uploads; '
                                "upload the file again", status=404)
        self.media.move_to_end(media_id)
        return self.media[media_id]

    def find_sequence(self, sequence_id: Any) -> Generated:
        if not isinstance(sequence_id, str) or sequence_id not in self.sequences:
            raise ApiError(f'"sequence_id": {sequence_id!r} is not one of the last {KEEP_SEQUENCES} '
                                "sequences generated; caption or ask again", status=404)
        self.sequences.move_to_end(sequence_id)
        return self.sequences[sequence_id]


def remember(store: OrderedDict, key: str, value: Any, keep: int) -> list[str]:
    """Put `value` last in `store`, dropping the oldest beyond `keep`; returns the keys dropped."""
    store[key] = value
    store.move_to_end(key)
    dropped = []
    while len(store) > keep:
        dropped.append(store.popitem(last=False)[0])
    return dropped


def integer(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(f'"{name}": {value!r} is not an integer from {low} to {high}; pass one in that range')
    return value


def png(pixels: torch.Tensor) -> bytes:
    """(3, H, W) float on the 0-255 scale -> PNG bytes."""
    array = pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def parity_row(stage: dict[str, Any], atol: float, rtol: float) -> dict[str, Any]:
    """One stage of parity_report as the page's row. The bound a tensor stage is held to is
    atol + rtol * max |transformers|, that scale recovered as max_abs / max_rel (unknown at 0)."""
    max_abs, max_rel = (x if x is not None and math.isfinite(x) else None  # JSON has no inf or NaN
                        for x in (stage["max_abs"], stage["max_rel"]))
    tolerance = atol + rtol * (max_abs / max_rel) if max_abs and max_rel else None
    tokens = parity.tokens_line(stage["ours"], stage["theirs"]) if stage["ours"] is not None else None
    return {"stage": stage["name"], "max_abs_diff": max_abs, "max_rel_diff": max_rel, "tolerance": tolerance,
            "ok": stage["passed"], "tokens": tokens}
