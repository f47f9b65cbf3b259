"""Images and videos as users really have them: damaged, empty, misnamed, enormous, animated.

The contract: `sniff_media`, `load_image` and `load_video_frames` either return what they
promise or raise ValueError/FileNotFoundError with one documented line naming the file; no other
exception and no warning escapes. In a caption batch, bad files are reported one line each and
the good ones are still captioned (exit code 1).

Choices tested here (docs/processing.md, docs/errors.md): an animated GIF/WebP/APNG is an image
and its first frame is used, even by a video model; Pillow's decompression-bomb limit (twice
PIL.Image.MAX_IMAGE_PIXELS) is a one-line refusal made while sniffing, before anything decodes;
below it, Pillow's warning is silenced and the image loads, shrunk.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from git_scratch.data.processor import load_image, sniff_media
from git_scratch.data.video import load_video_frames
from tests.data.test_video import write_audio_only
from tests.hardening.support import CASES, check_message, error_line, fuzz, make_checkpoint, run_cli

EXTENSIONS = [".png", ".jpg", ".gif", ".webp", ".mp4", ".avi", ".txt", ""]


def noise(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated(fmt: str) -> bytes:
    """Two frames: red, then blue."""
    red, blue = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))
    return encoded(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0)


def clip(path: Path, n_frames: int = 8, codec: str = "mpeg4", fmt: str | None = None) -> bytes:
    """A 32x32 clip; frame i is solid grey 12 * i."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 12 * i % 256, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def giant_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, then almost no data: the classic bomb
    shape, refused from the header alone."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def giant_gif(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + image + b";"


def giant_bmp(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + b"\0" * 16


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Valid files of every kind the fuzz damages."""
    root = tmp_path_factory.mktemp("seeds")
    image = noise()
    files = {fmt.lower(): encoded(image, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO")}
    files["tiff-lzw"] = encoded(image, "TIFF", compression="tiff_lzw")
    files |= {f"animated-{fmt.lower()}": animated(fmt) for fmt in ("GIF", "PNG", "WEBP")}
    files["mp4"] = clip(root / "clip.mp4")
    files["mkv-h264"] = clip(root / "clip.mkv", codec="libx264")
    files["avi"] = clip(root / "clip.avi")
    files["audio-only"] = write_audio_only(root / "sound.mp4").read_bytes()
    return files


def load_any(path: Path) -> str:
    """What the caption command does with a file, minus the model: sniff, then decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to a user's terminal fails the test
        kind = sniff_media(path)
        if kind == "image":
            image = load_image(path, 32)
            assert image.mode == "RGB" and min(image.size) >= 1
        else:
            frames = load_video_frames(path, 3)
            assert len(frames) == 3 and all(frame.mode == "RGB" for frame in frames)
    return kind


def loads_or_refuses(path: Path) -> str | None:
    """The kind the file loads as, or None after checking the refusal is one documented line."""
    try:
        return load_any(path)
    except (ValueError, FileNotFoundError) as e:
        check_message(str(e), str(path))
        return None


# --- fuzz ----------------------------------------------------------------------------------------


@fuzz(150)
@given(data=st.data())
def test_damaged_files_load_or_fail_in_one_line(seeds: dict[str, bytes], tmp_path_factory, data) -> None:
    """Every format, truncated or with bytes overwritten (mostly in the header, where parsers
    branch), under an extension that may lie."""
    name = data.draw(st.sampled_from(sorted(seeds)))
    damaged = bytearray(seeds[name])
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged) - 1))]
    else:
        span = data.draw(st.sampled_from([64, 512, len(damaged)]))
        for _ in range(data.draw(st.integers(1, 8))):
            damaged[data.draw(st.integers(0, min(span, len(damaged)) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("fuzz") / f"file{data.draw(st.sampled_from(EXTENSIONS))}"
    path.write_bytes(bytes(damaged))
    CASES["media files damaged (truncated or bytes overwritten)"] += 1
    loads_or_refuses(path)


# --- specific inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: giant_png(100_000, 100_000), lambda: giant_gif(65_535, 65_535),
                                  lambda: giant_bmp(60_000, 60_000)], ids=["png", "gif", "bmp"])
def test_decompression_bomb_headers_are_refused_before_decoding(tmp_path: Path, make) -> None:
    path = tmp_path / "bomb.jpg"
    path.write_bytes(make())
    CASES["decompression bombs"] += 1
    for load in (sniff_media, load_image):
        with pytest.raises(ValueError) as refused:
            load(path)
        check_message(str(refused.value), str(path), "decompression-bomb limit")


def test_real_zlib_bomb_and_the_zone_below_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4096 x 4096 black PNG is 50 kB on disk and 50 MB decoded. Over twice the limit it is
    refused; between the limit and twice it (where Pillow only warns) it loads, shrunk, silently."""
    path = tmp_path / "black.png"
    Image.new("RGB", (4096, 4096)).save(path)
    assert path.stat().st_size < 100_000
    CASES["decompression bombs"] += 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4096 * 4096 // 3)
    with pytest.raises(ValueError) as refused:
        sniff_media(path)
    check_message(str(refused.value), str(path), "decompression-bomb limit")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4096 * 4096 * 2 // 3)  # over the limit, under twice it
    assert load_any(path) == "image"
    assert load_image(path, 32).size == (256, 256)  # shrunk by 16 while loading: 8x the 32-px target


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_zero_byte_files(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"empty{extension}"
    path.write_bytes(b"")
    CASES["zero-byte files"] += 1
    assert loads_or_refuses(path) is None
    for load in (load_image, lambda p: load_video_frames(p, 2)):
        with pytest.raises(ValueError) as refused:
            load(path)
        check_message(str(refused.value), str(path))


@pytest.mark.parametrize(("seed", "name", "kind"), [
    ("png", "photo.jpg", "image"), ("jpeg", "photo.png", "image"), ("webp", "photo.gif", "image"),
    ("gif", "clip.mp4", "image"), ("bmp", "photo", "image"), ("tiff", "scan.txt", "image"),
    ("mp4", "photo.jpg", "video"), ("mkv-h264", "photo.png", "video"), ("avi", "song.mp3", "video"),
])
def test_extensions_that_lie(seeds: dict[str, bytes], tmp_path: Path, seed: str, name: str, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(seeds[seed])
    CASES["extensions that lie"] += 1
    assert load_any(path) == kind


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_is_its_first_frame(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"animated.{fmt.lower()}.mp4"  # named like a video, still an image
    path.write_bytes(animated(fmt))
    CASES["animated images"] += 1
    assert sniff_media(path) == "image"
    red, _, blue = load_image(path).getpixel((0, 0))
    assert red > 200 > blue


def test_video_corner_cases(tmp_path: Path) -> None:
    """No video stream; a single frame; an index cut off (MP4's moov at the end); a damaged AVI
    index; a Matroska file cut mid-stream (no index needed: frames up to the cut)."""
    CASES["videos: no stream, one frame, broken index"] += 5
    sound = tmp_path / "sound.mp4"
    write_audio_only(sound)
    assert loads_or_refuses(sound) is None
    with pytest.raises(ValueError, match="has no video stream"):
        load_video_frames(sound, 6)

    single = tmp_path / "single.mp4"
    clip(single, n_frames=1)
    frames = load_video_frames(single, 6)
    assert len(frames) == 6 and len({frame.tobytes() for frame in frames}) == 1  # frame 0 six times

    whole = clip(tmp_path / "whole.mp4", n_frames=20)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    assert loads_or_refuses(cut) is None

    avi = bytearray(clip(tmp_path / "whole.avi", n_frames=20))
    index = avi.rfind(b"idx1")
    avi[index + 8:] = bytes(len(avi) - index - 8)  # the index entries zeroed: FFmpeg must scan
    (tmp_path / "noindex.avi").write_bytes(bytes(avi))
    assert loads_or_refuses(tmp_path / "noindex.avi") in ("video", None)

    mkv = clip(tmp_path / "whole.mkv", n_frames=20)
    (tmp_path / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])
    assert loads_or_refuses(tmp_path / "cut.mkv") in ("video", None)


# --- the caption command ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {"image": make_checkpoint(root / "image"), "video": make_checkpoint(root / "video", n_frames=2)}


def test_batch_with_bad_files_captions_the_good_ones(checkpoints: dict[str, Path], seeds: dict[str, bytes],
                                                     tmp_path: Path) -> None:
    good = {"a.png": seeds["png"], "b.photo": seeds["jpeg"], "c.gif": animated("GIF")}
    bad = {"empty.jpg": b"", "bomb.png": giant_png(100_000, 100_000), "notes.jpg": b"just text\n",
           "cut.png": seeds["png"][:200], "sound.mp4": seeds["audio-only"], "clip.mp4": seeds["mp4"],
           "missing.png": None, "folder": "dir"}
    order = ["a.png", "empty.jpg", "bomb.png", "b.photo", "notes.jpg", "cut.png", "sound.mp4", "missing.png",
             "folder", "clip.mp4", "c.gif"]
    for name, data in {**good, **bad}.items():
        if isinstance(data, bytes):
            (tmp_path / name).write_bytes(data)
        elif data == "dir":
            (tmp_path / name).mkdir()
    CASES["caption batches mixing good and bad files"] += 1
    run = run_cli("caption", checkpoints["image"], *(tmp_path / n for n in order), "--max-new-tokens", "3")
    assert run.code == 1 and "Traceback" not in run.err
    assert [line.split("\t")[0] for line in run.out.splitlines()] == [str(tmp_path / n) for n in order if n in good]
    errors = run.err.strip().split("\n")
    assert len(errors) == len(bad)
    for line, name in zip(errors, [n for n in order if n in bad]):  # in input order, each naming its file
        assert line.startswith("git-scratch: error: ")
        check_message(line.removeprefix("git-scratch: error: "), str(tmp_path / name))
    assert "image model" in errors[-1]  # the video, given to an image model


def test_video_model_captions_an_animated_gif_as_its_first_frame(checkpoints: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    (tmp_path / "anim.gif").write_bytes(animated("GIF"))
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "first.png")
    single = tmp_path / "single.mp4"
    clip(single, n_frames=1)
    run = run_cli("caption", checkpoints["video"], tmp_path / "anim.gif", tmp_path / "first.png", single,
                  "--max-new-tokens", "4")
    assert run.code == 0, run.err
    (_, from_gif), (_, from_png), _ = [line.split("\t") for line in run.out.splitlines()]
    assert from_gif == from_png


def test_vqa_on_a_bad_file_is_one_line(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bomb.jpg").write_bytes(giant_png(100_000, 100_000))
    error_line(run_cli("vqa", checkpoints["image"], tmp_path / "bomb.jpg", "-q", "w1"), "decompression-bomb")
    error_line(run_cli("vqa", checkpoints["image"], tmp_path, "-q", "w1"), "is a directory")
