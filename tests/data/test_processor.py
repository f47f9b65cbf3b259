"""Image preprocessing against transformers' processor for GIT, on Pillow-made files of every mode.

The reference is what `AutoImageProcessor.from_pretrained` builds from microsoft/git-base's
preprocessor_config.json (written out below): in transformers 5.x the torchvision-backed
`CLIPImageProcessor`. Where our documented conversion differs from what transformers does
with the raw file (16-bit and float modes, EXIF rotation), transformers is fed the image
`load_image` returned, and the conversion itself is checked separately.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch.data.processor import ImageProcessor, load_image, sniff_media, to_rgb

transformers = pytest.importorskip("transformers")

# microsoft/git-base/preprocessor_config.json
GIT_BASE_CONFIG: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "GitProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
# The same in the older feature-extractor spelling, with plain ints.
OLD_STYLE_CONFIG: dict[str, Any] = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": GIT_BASE_CONFIG["image_mean"],
    "image_std": GIT_BASE_CONFIG["image_std"], "resample": 3, "size": 224,
}


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("git-base"), GIT_BASE_CONFIG)


@pytest.fixture(scope="module")
def hf(checkpoint: Path) -> Any:
    processor = transformers.AutoImageProcessor.from_pretrained(checkpoint)
    assert processor.backend == "torchvision"  # the default we claim to match
    return processor


@pytest.fixture(scope="module")
def ours(checkpoint: Path) -> ImageProcessor:
    return ImageProcessor.from_pretrained(checkpoint)


def hf_pixels(hf: Any, image: Image.Image) -> torch.Tensor:
    return hf(image, return_tensors="pt").pixel_values


def noise(width: int = 97, height: int = 61, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def noise_rgba() -> Image.Image:
    alpha = np.random.default_rng(1).integers(0, 256, (61, 97, 1), dtype=np.uint8)
    alpha[:5] = 0  # fully transparent rows
    return Image.fromarray(np.concatenate([np.asarray(noise()), alpha], axis=-1), mode="RGBA")


def waves(width: int, height: int) -> Image.Image:
    """Smooth content: big images that still encode in milliseconds."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [128 + 100 * np.sin(x / 37), 128 + 100 * np.cos(y / 23), (x + y) % 256]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8))


def palette_with_transparency() -> Image.Image:
    image = noise().convert("P")
    image.info["transparency"] = int(image.getpixel((0, 0)))
    return image


def animated_gif(path: Path) -> Path:
    first, second = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    return path


def saved(image: Image.Image, name: str, **options: Any) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        image.save(directory / name, **options)
        return directory / name
    return write


# Files whose conversion to RGB transformers does exactly as we do.
SAME_AS_TRANSFORMERS: dict[str, Callable[[Path], Path]] = {
    "RGB": saved(noise(), "rgb.png"),
    "RGBA": saved(noise_rgba(), "rgba.png"),
    "LA": saved(noise_rgba().convert("LA"), "la.png"),
    "PA": saved(noise_rgba().convert("PA"), "pa.tiff"),
    "L": saved(noise().convert("L"), "l.png"),
    "1": saved(noise().convert("1"), "bits.png"),
    "P": saved(noise().convert("P"), "p.png"),
    "P-transparency": saved(palette_with_transparency(), "pt.png"),
    "CMYK": saved(noise().convert("CMYK"), "cmyk.jpg", quality=95),
    "1x1": saved(noise(1, 1), "one.png"),
    "30x50": saved(noise(30, 50), "small.png"),
    "3000x1000": saved(waves(3000, 1000), "wide.png"),
    "animated-gif": lambda d: animated_gif(d / "anim.gif"),
}


@pytest.mark.parametrize("make", SAME_AS_TRANSFORMERS.values(), ids=SAME_AS_TRANSFORMERS.keys())
def test_matches_transformers(tmp_path: Path, make: Callable[[Path], Path], hf: Any, ours: ImageProcessor) -> None:
    path = make(tmp_path)
    pixel_values = ours([load_image(path)])
    assert pixel_values.shape == (1, 3, 224, 224) and pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values, hf_pixels(hf, Image.open(path)), rtol=0, atol=1e-5)


def exif_rotated_jpeg(directory: Path) -> Path:
    image = waves(64, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored image is shown rotated 90 degrees clockwise
    image.save(directory / "phone.jpg", exif=exif, quality=95)
    return directory / "phone.jpg"


# Files we convert our own documented way; transformers gets our converted image.
OWN_CONVERSION: dict[str, Callable[[Path], Path]] = {
    "I;16": saved(Image.fromarray((np.asarray(noise().convert("L"), np.uint16) * 257)), "deep.png"),
    "I": saved(Image.fromarray(np.asarray(noise().convert("L"), np.int32) * 200), "int.tiff"),
    "F": saved(Image.fromarray(np.asarray(noise().convert("L"), np.float32) / 255), "float.tiff"),
    "EXIF-rotated": exif_rotated_jpeg,
}


@pytest.mark.parametrize("make", OWN_CONVERSION.values(), ids=OWN_CONVERSION.keys())
def test_matches_transformers_after_our_conversion(tmp_path: Path, make: Callable[[Path], Path], hf: Any,
                                                   ours: ImageProcessor) -> None:
    image = load_image(make(tmp_path))
    assert image.mode == "RGB"
    torch.testing.assert_close(ours([image]), hf_pixels(hf, image), rtol=0, atol=1e-5)


def test_batch_of_mixed_sizes(hf: Any, ours: ImageProcessor) -> None:
    images = [noise(97, 61), noise(30, 50, seed=2), noise(225, 223, seed=3), noise(64, 39, seed=4)]
    torch.testing.assert_close(ours(images), hf(images, return_tensors="pt").pixel_values, rtol=0, atol=1e-5)


def test_pil_backend_differs_only_in_the_resize_kernel(checkpoint: Path, ours: ImageProcessor) -> None:
    """transformers' other backend resizes with PIL's bicubic (a = -0.5, torch uses -0.75): a few
    levels out of 255 on noise, and identical when no resize happens (docs/processing.md)."""
    pil = transformers.AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
    unresized = noise(224, 224)
    torch.testing.assert_close(ours([unresized]), hf_pixels(pil, unresized), rtol=0, atol=1e-5)
    assert (ours([noise()]) - hf_pixels(pil, noise())).abs().max() < 0.2


def test_alpha_is_composited_on_white() -> None:
    pixels = np.array([[[10, 20, 30, 0], [0, 0, 0, 128], [10, 20, 30, 255]]], np.uint8)
    assert np.asarray(to_rgb(Image.fromarray(pixels, mode="RGBA"))).tolist() == [
        [[255, 255, 255], [127, 127, 127], [10, 20, 30]]]
    transparent = palette_with_transparency()
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([[0, 257 * 100, 65535]], np.uint16), [0, 100, 255]),  # I;16: value / 257
    (np.array([[-5, 257 * 100, 70000]], np.int32), [0, 100, 255]),  # I: 16-bit scale, clipped
    (np.array([[0.0, 0.2, 1.0]], np.float32), [0, 51, 255]),  # F within [0, 1]: times 255
    (np.array([[-3.0, 100.0, 300.0]], np.float32), [0, 100, 255]),  # F otherwise: 0-255, clipped
])
def test_deep_modes_are_scaled_to_eight_bits(values: np.ndarray, expected: list[int]) -> None:
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == expected and (rgb == rgb[..., :1]).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: left half ends up on top
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]


def test_animated_file_gives_its_first_frame(tmp_path: Path) -> None:
    assert load_image(animated_gif(tmp_path / "anim.gif")).getpixel((0, 0)) == (255, 0, 0)
    red, _, blue = load_image(animated_webp(tmp_path / "anim.webp")).getpixel((0, 0))  # lossy
    assert red > 200 > blue


@pytest.mark.parametrize("name", ["big.jpg", "big.png"])  # JPEG shrinks while decoding, PNG after
def test_huge_images_are_shrunk_at_load(tmp_path: Path, checkpoint: Path, name: str) -> None:
    """1200x600 is huge for a 32-pixel target: shrunk by 2, still 8x the target. The result stays
    within one grey level of transformers on the full image."""
    waves(1200, 600).save(tmp_path / name, quality=95)
    assert load_image(tmp_path / name, shortest_edge=32).size == (600, 300)
    assert load_image(tmp_path / name, shortest_edge=None).size == (1200, 600)
    assert load_image(tmp_path / name, shortest_edge=38).size == (1200, 600)  # under 16x: untouched
    hf = transformers.AutoImageProcessor.from_pretrained(
        checkpoint, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ours = ImageProcessor(size=32, crop_size=32)
    difference = ours([load_image(tmp_path / name, shortest_edge=32)]) - hf_pixels(hf, Image.open(tmp_path / name))
    assert difference.abs().max() <= 1.01 / 255 / min(ours.std)


def one_line(error: pytest.ExceptionInfo[Exception], path: Path) -> str:
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    return message


def test_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        load_image(tmp_path / "nope.jpg")
    assert one_line(missing, tmp_path / "nope.jpg").endswith("not found")

    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG")
    with pytest.raises(ValueError) as text:
        load_image(tmp_path / "notes.jpg")
    assert "is not an image Pillow can read" in one_line(text, tmp_path / "notes.jpg")

    data = (saved(noise(), "whole.png")(tmp_path)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as truncated:
        load_image(tmp_path / "cut.png")
    one_line(truncated, tmp_path / "cut.png")

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 97 x 61 is over twice that: a "bomb"
    with pytest.raises(ValueError) as bomb:
        load_image(tmp_path / "whole.png")
    assert "decompression-bomb limit" in one_line(bomb, tmp_path / "whole.png")


def animated_webp(path: Path) -> Path:
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path, format="WEBP", save_all=True,
                                                   append_images=[Image.new("RGB", (40, 30), (0, 0, 255))])
    return path


def test_sniff_media_reads_content_not_extension(tmp_path: Path) -> None:
    assert sniff_media(saved(noise(), "photo.mp4", format="PNG")(tmp_path)) == "image"
    assert sniff_media(animated_webp(tmp_path / "clip.mp4")) == "image"  # animated, still an image
    (tmp_path / "notes.jpg").write_text("this is text")
    with pytest.raises(ValueError) as neither:
        sniff_media(tmp_path / "notes.jpg")
    assert one_line(neither, tmp_path / "notes.jpg") == (
        f"{tmp_path / 'notes.jpg'} is neither an image Pillow can open nor a video with a video stream")
    with pytest.raises(FileNotFoundError):
        sniff_media(tmp_path / "nope.png")


def test_from_pretrained_reads_official_and_old_style_configs(tmp_path: Path, ours: ImageProcessor) -> None:
    assert ours == ImageProcessor()  # git-base's file holds exactly our defaults
    old = ImageProcessor.from_pretrained(write_config(tmp_path / "old", OLD_STYLE_CONFIG))
    assert old == ImageProcessor()
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "old").crop_size["height"] == 224


def test_from_pretrained_without_a_config_file(tmp_path: Path) -> None:
    assert ImageProcessor.from_pretrained(tmp_path) == ImageProcessor()
    assert ImageProcessor.from_pretrained(tmp_path, image_size=384) == ImageProcessor(size=384, crop_size=384)
    with pytest.raises(FileNotFoundError, match="checkpoint directory .* not found"):
        ImageProcessor.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(("size", "crop_size", "resample"), [
    (256, 240, 2),  # bilinear
    (256, 240, 0),  # nearest
    (100, 121, 3),  # crop larger than the short side: zero padding, odd pixel at the bottom
])
def test_save_pretrained_round_trips_through_transformers(tmp_path: Path, size: int, crop_size: int,
                                                           resample: int) -> None:
    custom = ImageProcessor(size=size, crop_size=crop_size, resample=resample)
    file = custom.save_pretrained(tmp_path / "ckpt")
    assert [p.name for p in file.parent.iterdir()] == ["preprocessor_config.json"]  # no temp file left
    assert ImageProcessor.from_pretrained(tmp_path / "ckpt") == custom
    hf = transformers.CLIPImageProcessor.from_pretrained(tmp_path / "ckpt")
    image = noise(300, 200)
    torch.testing.assert_close(custom([image]), hf_pixels(hf, image), rtol=0, atol=1e-5)
    hf.save_pretrained(tmp_path / "back")
    assert ImageProcessor.from_pretrained(tmp_path / "back") == custom


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError) as bad_json:
        ImageProcessor.from_pretrained(broken)
    assert "is not valid JSON" in one_line(bad_json, broken / "preprocessor_config.json")

    oblong = write_config(tmp_path / "oblong", {**GIT_BASE_CONFIG, "crop_size": {"height": 224, "width": 200}})
    with pytest.raises(ValueError, match="crop_size = .* is not supported"):
        ImageProcessor.from_pretrained(oblong)

    base = write_config(tmp_path / "base", GIT_BASE_CONFIG)
    with pytest.raises(ValueError, match="crops to 224 px but image_size = 384"):
        ImageProcessor.from_pretrained(base, image_size=384)
