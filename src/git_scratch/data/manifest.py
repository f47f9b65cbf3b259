"""Training and evaluation data: JSONL manifests -> batches of pixels, token ids and labels.

A manifest holds one example per line, paths relative to the manifest's directory:

    {"image": "img/1.png", "caption": "a red circle"}
    {"image": "img/1.png", "question": "what color is the circle?", "answer": "red"}
    {"video": "clips/7.mp4", "caption": "a man is cooking"}

Token layout and labels, as GIT trains (loss only where a label is not -100):

    captioning   input_ids  [CLS] a  red circle [SEP]      labels  -100 a red circle [SEP]
    question     input_ids  [CLS] what ... ? red [SEP]     labels  -100 ... -100 red [SEP]

The loss shifts by one (model.git_loss), so the first label never counts; a question's tokens
are context, never learned. A bad line or file is logged with its line number and skipped.

`max_text_len` (None: texts whole) truncates as the original microsoft/GenerativeImage2Text trains
(train.py, get_data, max_text_len 40): the question and the answer are each cut to their first
max_text_len tokens; if together they are still longer than max_text_len, only their last
max_text_len - 2 tokens are kept; then [CLS] and [SEP] go around them. So a caption alone keeps its
first 40 tokens (42 with the specials), and a long question loses its beginning, never the answer's end.

Letters: B batch, T text tokens, F frames.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .processor import ImageProcessor
from .tokenizer import GitTokenizer

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line in the manifest, for messages
    media: Path
    is_video: bool
    prompt: str | None  # the question, or None for a caption
    target: str  # the caption or the answer


def read_manifest(path: str | Path, max_bad_fraction: float = 0.5) -> list[Example]:
    """Parse and check every line (file existence included); skip bad lines with a warning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    examples, bad = [], []
    # surrogateescape keeps bytes that are not UTF-8 visible, so _parse_line can call the line bad.
    for number, text in enumerate(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            examples.append(_parse_line(text, number, path.parent))
        except ValueError as e:
            bad.append(f"{path}:{number}: {e}")
            log.warning("%s; skipped", bad[-1])
    total = len(examples) + len(bad)
    if total == 0:
        raise ValueError(f"manifest {path} has no examples; write one JSON object per line")
    if len(bad) > max_bad_fraction * total:
        raise ValueError(f"manifest {path}: {len(bad)} of {total} lines are bad (first: {bad[0]}); fix the manifest")
    return examples


def _parse_line(text: str, number: int, root: Path) -> Example:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a byte that is not UTF-8: a bad line, not a caption with U+FFFD in it
        raise ValueError(f"not UTF-8 at character {e.start}; re-save the manifest as UTF-8") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    media_keys = [k for k in ("image", "video") if k in record]
    if len(media_keys) != 1 or not isinstance(record[media_keys[0]], str):
        raise ValueError('needs exactly one of "image" or "video" holding a path')
    media = root / record[media_keys[0]]
    if not media.is_file():
        raise ValueError(f"{media_keys[0]} {media} not found")
    if "caption" in record and ("question" in record or "answer" in record):
        # Which one to train on would be a guess: the line is bad, named with its number like the others.
        raise ValueError('has "caption" and "question"/"answer"; a line is one example, '
                         "so put the caption and the question on separate lines")
    if "caption" in record:
        prompt, target = None, record["caption"]
    elif "question" in record and "answer" in record:
        prompt, target = record["question"], record["answer"]
    else:
        raise ValueError('needs "caption", or "question" and "answer"')
    if not isinstance(target, str) or not target.strip() or not (prompt is None or isinstance(prompt, str)):
        raise ValueError("caption, question and answer must be non-empty strings")
    try:
        (target + (prompt or "")).encode("utf-8")
    except UnicodeEncodeError:  # a "\ud800"-style escape decodes to a lone surrogate
        raise ValueError("caption, question or answer holds an unpaired surrogate escape (\\udXXX); "
                         "fix the text") from None
    return Example(number, media, media_keys[0] == "video", prompt, target)


def tokens_and_labels(tokenizer: GitTokenizer, prompt: str | None, target: str,
                      max_text_len: int | None = None) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer.encode(prompt) if prompt is not None else []
    target_ids = tokenizer.encode(target)
    if max_text_len is not None:  # the original's rule, in the module docstring
        prompt_ids, target_ids = prompt_ids[:max_text_len], target_ids[:max_text_len]
    ids, labels = prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids
    if max_text_len is not None and len(ids) > max_text_len:
        ids, labels = ids[-(max_text_len - 2):], labels[-(max_text_len - 2):]
    return [tokenizer.bos_id] + ids + [tokenizer.eos_id], [IGNORE] + labels + [tokenizer.eos_id]


class ManifestDataset(Dataset):
    """Examples -> dicts of pixel_values (3, H, W) or (F, 3, H, W) and texts [(input_ids, labels)];
    None when the file is bad.

    `pack` makes one item per image holding all of its texts (a caption and its questions),
    which collate packs into one row: the image is encoded once for all of them, and the mask
    keeps each text to itself (model/mask.py), so the loss is that of the texts taken one by one.
    `preload` decodes every image once up front: worth it for small images read many times.
    `max_text_len` truncates each text as the original trains (module docstring); None keeps them whole."""

    def __init__(self, examples: Sequence[Example], processor: ImageProcessor, tokenizer: GitTokenizer,
                 *, num_frames: int | None = None, preload: bool = False, pack: bool = False,
                 max_text_len: int | None = None) -> None:
        self.examples = list(examples)
        self.max_text_len = max_text_len
        self.processor, self.tokenizer, self.num_frames = processor, tokenizer, num_frames
        groups: dict[Path | int, list[int]] = {}  # by image when packing, else one per example
        for i, ex in enumerate(self.examples):
            groups.setdefault(ex.media if pack else i, []).append(i)
        self.groups = list(groups.values())
        self.pixels: dict[Path, torch.Tensor | None] | None = None
        if preload:
            self.pixels = {}
            for ex in self.examples:
                if ex.media not in self.pixels:
                    self.pixels[ex.media] = self._load(ex)

    def __len__(self) -> int:
        return len(self.groups)

    def pixel_values(self, ex: Example) -> torch.Tensor | None:
        return self.pixels[ex.media] if self.pixels is not None else self._load(ex)

    def _load(self, ex: Example) -> torch.Tensor | None:
        try:
            if ex.is_video:
                from .video import load_video_frames, preprocess_video

                if not self.num_frames:
                    raise ValueError("a video example needs a model with temporal embeddings (n_frames)")
                return preprocess_video(load_video_frames(ex.media, self.num_frames), self.processor)
            return self.processor.preprocess(self.processor.load(ex.media))  # (3, H, W)
        except (OSError, ValueError) as e:
            log.warning("manifest line %d: %s; skipped", ex.line, str(e).splitlines()[0] if str(e) else e)
            return None

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        members = [self.examples[i] for i in self.groups[index]]
        pixel_values = self.pixel_values(members[0])
        if pixel_values is None:
            return None
        texts = [tokens_and_labels(self.tokenizer, ex.prompt, ex.target, self.max_text_len) for ex in members]
        return {"pixel_values": pixel_values, "texts": texts}


def collate(items: Sequence[dict[str, Any] | None], pad_id: int) -> dict[str, torch.Tensor] | None:
    """Stack pixels; put each item's texts one after another in a row (segment ids 1, 2, ...)
    and RIGHT-pad the rows (training needs no common last column). Bad items are dropped."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    rows = [[tok for ids, _ in item["texts"] for tok in ids] for item in items]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)  # (B, T)
    segment_ids = torch.zeros((len(items), width), dtype=torch.long)  # (B, T), 0 = padding
    for row, item in enumerate(items):
        col = 0
        for segment, (ids, labs) in enumerate(item["texts"], start=1):
            input_ids[row, col:col + len(ids)] = torch.tensor(ids)
            labels[row, col:col + len(ids)] = torch.tensor(labs)
            segment_ids[row, col:col + len(ids)] = segment
            col += len(ids)
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items]),  # (B, 3, H, W) or (B, F, 3, H, W)
             "input_ids": input_ids, "attention_mask": (segment_ids > 0).long(), "labels": labels}
    if any(len(item["texts"]) > 1 for item in items):
        batch["segment_ids"] = segment_ids
    return batch
