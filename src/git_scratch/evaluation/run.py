"""A dataset's predictions at scale: shards over ranks, written as they finish, resumed after a kill.

    items --sort by (media, key)--> shards of `shard_size` items --> pending shards round-robin by rank
    shard --cut in batches of `batch_size` items--> DataLoader workers decode each batch's images
          --> one image prefix per distinct image, every prompt about it decoded against it
          --> work_dir/shard-00012.json, atomically, header first

Sorting puts the questions about one image next to each other, so a batch encodes each image
once and all its questions share that prefix, as training/evaluate.py's `predict` does. The cut
into shards and batches depends on the items and `shard_size`/`batch_size` alone, never on the
number of ranks: N processes run exactly the batches one process runs, so their predictions are
identical, and a resumed run may use another number of ranks.

A shard file's header names the model (a fingerprint of its config and weights), the settings
(batch and shard size, decoding arguments, processor) and the shard's item keys. A resumed run
whose header would differ refuses in one line instead of mixing two runs' predictions.

Under torchrun (WORLD_SIZE > 1) the ranks join a process group (gloo on CPU, nccl on CUDA) for
two barriers: one after every rank has listed the finished shards (so no rank sees another's new
file and splits the work differently) and one before the merge, after which every rank reads
all shards and returns the same predictions; rank 0 is the one that scores (cli/eval.py).

Letters: B images in a batch, F frames.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..data.video import load_video_frames, preprocess_video
from ..generation.prefix import encode_prefix
from ..generation.search import generate
from ..model.git import GIT

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
# Long enough for the slowest rank's last shard: the end barrier waits for it.
BARRIER_TIMEOUT = timedelta(hours=2)


@torch.no_grad()
def predict_items(model: GIT, items: Sequence[Any], processor: Any, tokenizer: Any, *, batch_size: int = 64,
                  work_dir: Path | None = None, num_workers: int = 2, progress: bool = False,
                  shard_size: int | None = None, **generate_kwargs: Any) -> dict[int | str, str]:
    """The model's caption or answer for every item (evaluation/datasets.py's EvalItem), by key, in
    the order of `items` whatever the number of ranks (result files list them so).

    Items whose image or video cannot be read are logged and left out of the result. With
    `work_dir` every finished shard is saved there and a rerun skips it; under torchrun
    `work_dir` is required (the ranks meet there). `shard_size` defaults to 2 batches: small
    enough that the ranks' shares stay even, large enough that a dataset is not thousands of files.
    `generate_kwargs` go to generation/search.py's `generate` (num_beams, max_new_tokens, ...)."""
    given = list(items)
    check_items(given, model, tokenizer, generate_kwargs)
    items = sorted(given, key=lambda it: (str(it.media), str(it.key)))
    shard_size = shard_size or 2 * batch_size
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and work_dir is None:
        raise ValueError(f"a run on {world} ranks needs a work dir shared by all of them; pass --work-dir DIR")
    rank, world, joined = join_ranks(model)
    try:
        shards = [items[start:start + shard_size] for start in range(0, len(items), shard_size)]
        settings = {"batch_size": batch_size, "shard_size": shard_size, "processor": repr(processor),
                    "n_items": len(items), **generate_kwargs}
        model_id = model_fingerprint(model)
        headers = [shard_header(model_id, settings, shard, index) for index, shard in enumerate(shards)]
        done = finished_shards(work_dir, headers) if work_dir is not None else set()
        barrier(world, model)  # every rank has listed the finished shards before any rank writes one
        pending = [i for i in range(len(shards)) if i not in done]
        mine = pending[rank::world]
        if done and rank == 0:
            log.info("%d of %d shards already done in %s; %d to go", len(done), len(shards), work_dir, len(pending))
        predictions = run_shards(model, shards, mine, headers, processor, tokenizer, batch_size=batch_size,
                                 work_dir=work_dir, num_workers=num_workers, progress=progress and rank == 0,
                                 generate_kwargs=generate_kwargs)
        barrier(world, model)  # every shard is on disk
        for index in range(len(shards)):
            if index not in mine:
                predictions |= read_shard(shard_path(work_dir, index))
    finally:
        if joined:
            dist.destroy_process_group()
    return {it.key: predictions[it.key] for it in given if predictions[it.key] is not None}


def check_items(items: Sequence[Any], model: GIT, tokenizer: Any, generate_kwargs: dict[str, Any]) -> None:
    """Everything that would otherwise stop a run mid-way, refused before the first batch."""
    if not items:
        raise ValueError("no items to evaluate; check the dataset's files and --split")
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"item key {twice!r} occurs more than once; each caption or question needs its own key")
    if any(it.is_video for it in items) and model.cfg.n_frames is None:
        raise ValueError("the items are videos but the model is an image model (no temporal embeddings); "
                         "use a video checkpoint such as microsoft/git-base-msrvtt-qa")
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("evaluation takes one caption or answer per item; drop num_return_sequences")
    new = generate_kwargs.get("max_new_tokens", inspect.signature(generate).parameters["max_new_tokens"].default)
    room = model.cfg.max_positions - new
    for item in items:
        n = len(tokenizer.prompt_ids(item.prompt))  # [CLS] alone for a caption
        if n > room:
            raise ValueError(f"item {item.key!r}: its question is {n} tokens with [CLS], which with max_new_tokens "
                             f"{new} exceeds the model's {model.cfg.max_positions} text positions; lower "
                             f"--max-new-tokens to {model.cfg.max_positions - n}")


def run_shards(model: GIT, shards: list[list[Any]], mine: list[int], headers: list[dict[str, Any]],
               processor: Any, tokenizer: Any, *, batch_size: int, work_dir: Path | None, num_workers: int,
               progress: bool, generate_kwargs: dict[str, Any]) -> dict[int | str, str | None]:
    """Predict this rank's shards, writing each as its last batch finishes."""
    plan = [(index, shards[index][start:start + batch_size])
            for index in mine for start in range(0, len(shards[index]), batch_size)]
    # One loader over all of this rank's batches, so the workers decode ahead across shard ends.
    loader = DataLoader([batch for _, batch in plan], batch_size=None, num_workers=num_workers,
                        collate_fn=partial(decode_batch, processor=processor, n_frames=model.cfg.n_frames))
    n_images = sum(len({it.media for it in batch}) for _, batch in plan)
    bar = tqdm(total=n_images, disable=not progress, desc="eval", unit="img", dynamic_ncols=True)
    predictions: dict[int | str, str | None] = {}
    shard_predictions: dict[int | str, str | None] = {}
    try:
        for step, ((index, batch), (images, image_index, failures)) in enumerate(zip(plan, loader)):
            for failure in failures:
                log.warning("%s; skipped", failure)
            shard_predictions |= predict_batch(model, tokenizer, batch, images, image_index, generate_kwargs)
            bar.update(len({it.media for it in batch}))
            if step + 1 == len(plan) or plan[step + 1][0] != index:  # the shard's last batch
                if work_dir is not None:
                    write_shard(shard_path(work_dir, index), headers[index], shard_predictions)
                predictions |= shard_predictions
                shard_predictions = {}
    finally:
        bar.close()
    return predictions


def decode_batch(batch: list[Any], *, processor: Any, n_frames: int | None,
                 ) -> tuple[list[torch.Tensor], list[int | None], list[str]]:
    """In a DataLoader worker: (pixel_values (3, H, W) or (F, 3, H, W) of each distinct medium of the
    batch that could be read, each item's index in that list or None, one reason per unreadable file)."""
    rows: dict[Path, int | None] = {}
    images, failures = [], []
    for item in batch:
        if item.media in rows:
            continue
        try:
            if item.is_video:
                pixels = preprocess_video(load_video_frames(item.media, n_frames), processor)  # (F, 3, H, W)
            else:
                pixels = processor.preprocess(processor.load(item.media))  # (3, H, W)
        except (OSError, ValueError) as e:
            failures.append(f"item {item.key!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            rows[item.media] = None
            continue
        rows[item.media] = len(images)
        images.append(pixels)
    return images, [rows[item.media] for item in batch], failures


def predict_batch(model: GIT, tokenizer: Any, batch: list[Any], images: list[torch.Tensor],
                  image_index: list[int | None], generate_kwargs: dict[str, Any]) -> dict[int | str, str | None]:
    """The batch's readable items, all the prompts about one image sharing its prefix: one generate
    call per image size (one in all but the original's aspect-keeping VQA preprocessing), because
    the number of image tokens follows the size."""
    out: dict[int | str, str | None] = {item.key: None for item in batch}
    device = model.lm_head.weight.device
    sizes: dict[tuple[int, ...], list[int]] = {}
    for index, pixels in enumerate(images):
        sizes.setdefault(tuple(pixels.shape), []).append(index)
    original = generate_kwargs.get("semantics") == "original"  # its prompts and its decoding
    for members in sizes.values():
        slot = {index: row for row, index in enumerate(members)}
        rows = [(item, slot[index]) for item, index in zip(batch, image_index) if index in slot]
        prefix = encode_prefix(model, torch.stack([images[i] for i in members]).to(device))  # (B, 3, H, W)
        # The original's rules count each row's prompt in its lengths, so its prompts are never padded:
        # one generate call per prompt length there, one for all rows otherwise.
        groups: dict[int, list[tuple[Any, int]]] = {}
        for item, row in rows:
            key = len(tokenizer.original_prompt_ids(item.prompt)) if original and item.prompt is not None else 0
            groups.setdefault(key, []).append((item, row))
        for group in groups.values():
            input_ids, attention_mask = tokenizer.batch_prompts([item.prompt for item, _ in group], original=original)
            ids = generate(model, None, input_ids.to(device), attention_mask.to(device), prefix=prefix,
                           image_index=torch.tensor([row for _, row in group], device=device), **generate_kwargs)
            for (item, _), row in zip(group, ids.tolist()):
                out[item.key] = tokenizer.decode_answer(row[input_ids.shape[1]:])  # the prompt columns cut off
    return out


# --- ranks -------------------------------------------------------------------------------------


def join_ranks(model: GIT) -> tuple[int, int, bool]:
    """(rank, world size, whether this call joined the process group) from torchrun's variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), world, False
    backend = "nccl" if model.lm_head.weight.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), world, True


def barrier(world: int, model: GIT) -> None:
    if world == 1:
        return
    device = model.lm_head.weight.device
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index or 0])
    else:
        dist.barrier()


# --- shard files -------------------------------------------------------------------------------


def shard_path(work_dir: Path, index: int) -> Path:
    return Path(work_dir) / f"shard-{index:05d}.json"


def shard_header(model_id: str, settings: dict[str, Any], shard: list[Any], index: int) -> dict[str, Any]:
    # The media's file names and the prompts too: the same keys over other files are other items.
    items = hashlib.sha256(json.dumps([[str(it.key), Path(it.media).name, it.prompt] for it in shard]).encode())
    header = {"format": SHARD_FORMAT, "model": model_id, "settings": settings, "shard": index,
              "keys": [it.key for it in shard], "items": items.hexdigest()[:16]}
    # What JSON would make of it (tuples to lists, objects to their type), so it compares with a read one.
    return json.loads(json.dumps(header, default=lambda value: type(value).__qualname__))


def model_fingerprint(model: GIT) -> str:
    """A hash of the config and of 64 evenly spaced values of every weight, in their dtype: another
    checkpoint, a fine-tuned one or another dtype changes it; hashing every byte of git-large would
    take longer than a shard. Device-independent, so a run resumed on another device is accepted."""
    digest = hashlib.sha256(repr(model.cfg).encode())
    for name, param in model.state_dict().items():
        flat = param.detach().flatten()
        sample = flat[::max(1, flat.numel() // 64)][:64].cpu().contiguous()
        digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return "sha256:" + digest.hexdigest()[:16]


def finished_shards(work_dir: Path, headers: list[dict[str, Any]]) -> set[int]:
    """Indices of the shards already in work_dir; a shard of another run is refused in one line."""
    done = set()
    for index, expected in enumerate(headers):
        path = shard_path(work_dir, index)
        if not path.exists():
            continue
        try:
            header = json.loads(path.read_text(encoding="utf-8"))["header"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is not a shard file this tool wrote; delete it, or pass another --work-dir")
        settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
        differ = [field for field in expected if field != "settings" and header.get(field) != expected[field]]
        differ += [name for name, value in expected["settings"].items() if settings.get(name) != value]
        if differ:
            raise ValueError(f"{path} comes from a run with another {', '.join(differ)}; resume with the same model, "
                             f"items and settings, or pass another --work-dir (or delete {work_dir}) to start over")
        done.add(index)
    return done


def write_shard(path: Path, header: dict[str, Any], predictions: dict[int | str, str | None]) -> None:
    rows = [[key, predictions[key]] for key in header["keys"]]
    atomic_write_text(path, json.dumps({"header": header, "predictions": rows}) + "\n")


def read_shard(path: Path) -> dict[int | str, str | None]:
    for _ in range(50):  # a shared filesystem can show another node's rename a moment late
        if path.exists():
            break
        time.sleep(0.1)
    return {key: text for key, text in json.loads(path.read_text(encoding="utf-8"))["predictions"]}
