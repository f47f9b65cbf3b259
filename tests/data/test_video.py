"""Video loading: even sampling in time order, short clips, frame counts the metadata gets wrong,
and one-line errors for files that are not videos. Clips are written here with PyAV: 32x32,
one solid grey level per frame, so a sampled frame tells which source frame it was."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch.data import video
from git_scratch.data.processor import ImageProcessor, sniff_media
from git_scratch.data.video import load_video_frames, preprocess_video, sample_indices

GREYS = [12 * i for i in range(20)]  # frame i is solid grey 12 * i; lossy codecs stay within +-4
# Irregular timestamps (ms): a variable-frame-rate clip. In AVI this makes the stored frame
# count wrong (about 3400 for 20 frames); Matroska and MPEG-TS store no count at all.
VFR_PTS_MS = [0, 10, 15, 100, 400, 410, 420, 700, 1000, 1001, 1002, 1500, 1600, 1700, 2500, 2600, 2610, 2620, 3000, 3300]


def write_clip(path: Path, greys: list[int], codec: str = "mpeg4", pts_ms: list[int] | None = None,
               rate: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, grey in enumerate(greys):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), grey, np.uint8), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def greys_of(frames: list[Image.Image]) -> list[int]:
    return [frame.getpixel((16, 16))[0] for frame in frames]


def assert_greys(frames: list[Image.Image], indices: list[int]) -> None:
    assert all(frame.mode == "RGB" and frame.size == (32, 32) for frame in frames)
    np.testing.assert_allclose(greys_of(frames), [GREYS[i] for i in indices], atol=4)


def test_sample_indices_spread_evenly_with_both_ends() -> None:
    assert sample_indices(20, 6) == [0, 4, 8, 11, 15, 19]
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(5, 1) == [0]


def test_sample_indices_repeat_frames_of_a_short_clip_in_order() -> None:
    assert sample_indices(3, 6) == [0, 0, 1, 1, 2, 2]
    assert sample_indices(1, 3) == [0, 0, 0]


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])  # libx264 reorders B-frames in the stream
def test_frames_are_sampled_evenly_and_in_time_order(tmp_path: Path, codec: str) -> None:
    path = write_clip(tmp_path / "clip.mp4", GREYS, codec)
    assert_greys(load_video_frames(path, 6), [0, 4, 8, 11, 15, 19])


def test_short_clip_repeats_frames(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "short.mp4", GREYS[:3])
    assert_greys(load_video_frames(path, 6), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".avi"])
def test_variable_frame_rate_without_or_with_wrong_frame_count(tmp_path: Path, suffix: str) -> None:
    path = write_clip(tmp_path / f"vfr{suffix}", GREYS, pts_ms=VFR_PTS_MS)
    assert video._metadata_frame_count(path) != len(GREYS)  # the container does not give the truth
    assert_greys(load_video_frames(path, 6), [0, 4, 8, 11, 15, 19])


@pytest.mark.parametrize("claimed", [7, 50])
def test_decoded_count_wins_over_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimed: int) -> None:
    path = write_clip(tmp_path / "clip.mp4", GREYS)
    monkeypatch.setattr(video, "_metadata_frame_count", lambda _: claimed)
    assert_greys(load_video_frames(path, 6), [0, 4, 8, 11, 15, 19])


def test_preprocess_video_is_the_image_processor_per_frame(tmp_path: Path) -> None:
    frames = load_video_frames(write_clip(tmp_path / "clip.mp4", GREYS), 4)
    processor = ImageProcessor(size=24, crop_size=24)
    pixel_values = preprocess_video(frames, processor)
    assert pixel_values.shape == (4, 3, 24, 24) and pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values[2], processor.preprocess(frames[2]), rtol=0, atol=0)


def test_sniff_media_reads_content_not_extension(tmp_path: Path) -> None:
    disguised = write_clip(tmp_path / "clip.mp4", GREYS[:3]).rename(tmp_path / "clip.png")
    assert sniff_media(disguised) == "video"
    assert_greys(load_video_frames(disguised, 3), [0, 1, 2])
    # Pillow recognises a raw MPEG-1 stream's header (but cannot decode it): still a video.
    assert sniff_media(write_clip(tmp_path / "clip.m1v", GREYS[:3], "mpeg1video", rate=25)) == "video"


def test_audio_only_file(tmp_path: Path) -> None:
    path = write_audio_only(tmp_path / "sound.mp4")
    with pytest.raises(ValueError, match=r"sound\.mp4 has no video stream \(streams found: audio\)"):
        load_video_frames(path, 6)
    with pytest.raises(ValueError, match="neither an image Pillow can open nor a video with a video stream"):
        sniff_media(path)


def one_line_value_error(path: Path) -> str:
    with pytest.raises(ValueError) as info:
        load_video_frames(path, 6)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert "is not a video PyAV can open" in one_line_value_error(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.avi"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    assert "is not a video PyAV can open" in one_line_value_error(path)


def test_truncated_file(tmp_path: Path) -> None:
    data = write_clip(tmp_path / "clip.mp4", GREYS).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # MP4 keeps its index at the end: it is cut off
    one_line_value_error(path)


def test_stream_that_does_not_decode(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"  # FFmpeg opens *.jpg as a one-frame MJPEG "video" by name
    path.write_text("not a picture")
    assert "decoding frame 0 failed" in one_line_value_error(path)


def test_missing_file_and_bad_num_frames(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4 not found"):
        load_video_frames(tmp_path / "nope.mp4", 6)
    with pytest.raises(ValueError, match="num_frames = 0 must be at least 1"):
        load_video_frames(write_clip(tmp_path / "clip.mp4", GREYS[:2]), 0)


def test_decode_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "MAX_FRAMES", 5)
    assert "has more than 5 frames" in one_line_value_error(write_clip(tmp_path / "clip.mp4", GREYS))
