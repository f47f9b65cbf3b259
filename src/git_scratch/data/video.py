"""Video files to frames for GIT: decode with PyAV, sample frames evenly over the whole clip.

GIT's video checkpoints (git-*-vatex, git-*-msrvtt-qa) take `n_frames` frames per clip (6 in the
released ones), each preprocessed exactly like an image, then stacked as (B, F, 3, H, W); the
model adds one learned temporal embedding per frame position, so frame order matters.

Sampling: frame indices round(linspace(0, n - 1, num_frames)) over the n frames actually
decoded, first and last frame included. A clip with fewer than `num_frames` frames therefore
repeats frames in order (0, 0, 1, 1, 2, 2 for 3 -> 6): time is stretched evenly, rather than
padding with the last or a black frame, which the temporal embeddings never saw in training.

Letters: F frames.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .processor import ImageProcessor

# Bounds on the decode, so a bad file fails instead of hanging: seconds to wait for data
# (open, then each read), and frames decoded (two hours at 30 fps).
IO_TIMEOUT = 10.0
MAX_FRAMES = 216_000


def load_video_frames(path: str | Path, num_frames: int) -> list[Image.Image]:
    """`num_frames` RGB frames sampled evenly over the video at `path`, in time order.

    The frame count comes from decoding, not from metadata: when the container's count is missing
    (Matroska, raw streams) or wrong (variable frame rate, truncated index), the file is decoded
    a second time with the exact count.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames = {num_frames} must be at least 1")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} not found")
    estimate = _metadata_frame_count(path)
    frames, n_decoded = _decode(path, sample_indices(estimate, num_frames) if estimate > 0 else [])
    if n_decoded == 0:
        raise ValueError(f"{path} has a video stream but no frame could be decoded; is the file complete?")
    if n_decoded != estimate:
        frames, _ = _decode(path, sample_indices(n_decoded, num_frames))
    return frames


def sample_indices(n_frames: int, num_frames: int) -> list[int]:
    """Evenly spaced indices into n_frames, first and last included; repeats when n_frames < num_frames."""
    return np.linspace(0, n_frames - 1, num_frames).round().astype(int).tolist()


def preprocess_video(frames: list[Image.Image], processor: ImageProcessor) -> torch.Tensor:
    """Frames -> pixel_values (F, 3, H, W), each frame exactly as an image; add the batch axis
    (`.unsqueeze(0)`) for the model's (B, F, 3, H, W)."""
    if not frames:
        raise ValueError("no frames to preprocess; load_video_frames returns at least one")
    return processor(frames)  # (F, 3, H, W)


def _metadata_frame_count(path: Path) -> int:
    """The container's frame count for the first video stream; 0 when it does not say."""
    with _open(path) as container:
        return _video_stream(container, path).frames


def _decode(path: Path, indices: list[int]) -> tuple[list[Image.Image], int]:
    """Decode every frame; return the frames at `indices` (repeated as often as listed) and the count."""
    wanted = Counter(indices)
    frames: list[Image.Image] = []
    n = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame-parallel decoding; frames still come out in order
        try:
            for frame in container.decode(stream):
                if n == MAX_FRAMES:
                    raise ValueError(f"{path} has more than {MAX_FRAMES} frames; cut the clip shorter first")
                if wanted[n]:
                    # rgb24 whatever the pixel format; a repeated index repeats the same Image object
                    frames += [frame.to_image()] * wanted[n]
                n += 1
        except av.FFmpegError as e:
            raise ValueError(f"{path} is corrupt: decoding frame {n} failed ({_reason(e)})") from None
    return frames, n


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), timeout=IO_TIMEOUT)
    except av.FFmpegError as e:
        raise ValueError(f"{path} is not a video PyAV can open ({_reason(e)})") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        found = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise ValueError(f"{path} has no video stream (streams found: {found}); pass a video file")
    return container.streams.video[0]


def _reason(e: av.FFmpegError) -> str:
    return e.strerror or type(e).__name__
