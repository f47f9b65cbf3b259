"""ImageProcessor's three backends, each bit for bit (torch.equal) against the implementation it reproduces.

- "pil" (transformers 4.x's CLIPImageProcessor) and "original" (Microsoft's GenerativeImage2Text test
  transform) against tests/data/fixtures/backends.json, which scripts/processing_reference.py made by
  running those implementations on the images of tests/data/fixtures/reference_images.py (its docstring
  says how to regenerate it). The fixture keeps the sha256 of the float32 bytes: equal hashes are equal
  tensors.
- "torchvision" (the default) and "pil" against the installed transformers 5.x, computed here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT
from git_scratch.data.processor import ImageProcessor, load_image, to_rgb
from tests.conftest import hf_tiny, save_hf
from tests.data.fixtures.reference_images import grace_hopper, images

transformers = pytest.importorskip("transformers")

FIXTURE = json.loads((Path(__file__).parent / "fixtures/backends.json").read_text())
CASES: dict[str, dict[str, Any]] = FIXTURE["cases"]
PICTURES = images()


def sha256(pixel_values: torch.Tensor) -> str:
    return hashlib.sha256(pixel_values.numpy().astype("<f4").tobytes()).hexdigest()


def processor_for(case: dict[str, Any]) -> ImageProcessor:
    """Our processor for a reference's own settings: transformers' keyword arguments, or the original's
    parameter.yaml (test_crop_size, and test_respect_ratio_max for its VQA models)."""
    if "transformers_kwargs" in case:
        return ImageProcessor.from_dict({"image_processor_type": "CLIPImageProcessor",
                                         **case["transformers_kwargs"]}).for_backend("pil")
    parameter = case["parameter"]
    vqa = "test_respect_ratio_max" in parameter
    processor = ImageProcessor.original(parameter.get("test_crop_size", 224), "vqa" if vqa else "caption")
    assert processor.max_size == parameter.get("test_respect_ratio_max")
    return processor


def as_given(case: dict[str, Any], tmp_path: Path) -> Image.Image | Path:
    """The image as the reference got it: the original read a file (JPEG, or the image saved as PNG)."""
    name = case["image"]
    if not case.get("from_file"):
        return PICTURES[name]
    if name == "grace_hopper":
        return grace_hopper()
    PICTURES[name].save(tmp_path / f"{name}.png")
    return tmp_path / f"{name}.png"


@pytest.mark.parametrize("name", CASES)
def test_bit_identical_to_the_reference(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    pixel_values = processor_for(case)([as_given(case, tmp_path)])[0]  # (3, H, W)
    assert list(pixel_values.shape) == case["shape"] and pixel_values.dtype == torch.float32
    flat = pixel_values.view(-1)
    samples = {int(i): flat[int(i)].item() for i in case["samples"]}
    assert samples == {int(i): v for i, v in case["samples"].items()}  # a readable first failure
    assert sha256(pixel_values) == case["sha256"], f"bytes differ; sum {flat.double().sum()} vs {case['sum']}"


def test_fixture_covers_every_backend_and_kind_of_image() -> None:
    kinds = {(name.split("/")[0], case["image"]) for name, case in CASES.items()}
    for backend in ("pil", "original"):
        assert {image for b, image in kinds if b == backend} >= {"grace_hopper", "333x517", "225x224", "97x130",
                                                                  "rgba", "grey"}
    assert FIXTURE["versions"]["transformers"].startswith("4.")


@pytest.fixture(scope="module")
def hf_processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("clip")
    ImageProcessor().save_pretrained(directory)
    return {backend: transformers.AutoImageProcessor.from_pretrained(directory, backend=backend)
            for backend in ("torchvision", "pil")}


@pytest.mark.parametrize("name", ["grace_hopper", "333x517", "225x224", "97x130", "grey"])
def test_torchvision_and_pil_equal_transformers_5_bit_for_bit(name: str, hf_processors: dict[str, Any]) -> None:
    """The default equals transformers 5.x's default; "pil" equals 5.x's CLIPImageProcessorPil as well as
    4.x (the fixture) on RGB images: 5.x kept 4.x's PIL arithmetic."""
    image = PICTURES[name]
    for backend, theirs in hf_processors.items():
        ours = ImageProcessor() if backend == "torchvision" else ImageProcessor(backend=backend)
        assert torch.equal(ours([image]), theirs(image, return_tensors="pt").pixel_values), backend


def test_alpha_per_backend(hf_processors: dict[str, Any]) -> None:
    """5.x composites transparency on white; 4.x and the original drop alpha (Pillow's convert("RGB"))."""
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], np.uint8))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 255, 255], [227, 177, 152]]]
    assert np.asarray(to_rgb(rgba, "drop")).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    image = PICTURES["rgba"]
    pil_5x = hf_processors["pil"](image, return_tensors="pt").pixel_values
    assert torch.equal(ImageProcessor()([image]), hf_processors["torchvision"](image, return_tensors="pt").pixel_values)
    assert not torch.equal(ImageProcessor(backend="pil")([image]), pil_5x)  # 5.x's PIL backend composites too
    assert sha256(ImageProcessor(backend="pil")([image])[0]) == CASES["pil/224/rgba"]["sha256"]


def test_files_load_with_the_backends_alpha_rule(tmp_path: Path) -> None:
    PICTURES["rgba"].save(tmp_path / "rgba.png")
    for backend, alpha in (("torchvision", "white"), ("pil", "drop"), ("original", "drop")):
        processor = ImageProcessor(backend=backend)
        expected = to_rgb(PICTURES["rgba"], alpha)
        assert processor.load(tmp_path / "rgba.png").tobytes() == expected.tobytes()
        assert torch.equal(processor([tmp_path / "rgba.png"]), processor([expected]))
    assert load_image(tmp_path / "rgba.png", alpha="drop").tobytes() == PICTURES["rgba"].convert("RGB").tobytes()


def test_original_settings_follow_its_parameter_files(tmp_path: Path) -> None:
    """aux_data/models/*/parameter.yaml: captioning models crop test_crop_size (224); GIT_BASE_VQAv2 and
    _TEXTVQA use 480 with test_respect_ratio_max 640, GIT_LARGE_VQAv2 and _TEXTVQA 420 with 560."""
    caption = ImageProcessor.original(224)
    assert (caption.size, caption.crop_size, caption.do_center_crop, caption.max_size) == (224, 224, True, None)
    assert (ImageProcessor.original(480, "vqa").max_size, ImageProcessor.original(420, "vqa").max_size) == (640, 560)
    vqa = ImageProcessor.original(480, "vqa")
    assert not vqa.do_center_crop
    assert vqa([PICTURES["200x100"]]).shape == (1, 3, 320, 640)  # the 2:1 image: long side capped
    assert vqa([PICTURES["grace_hopper"]]).shape == (1, 3, 562, 480)  # 600/512 * 480 < 640: no cap
    ImageProcessor(size=480, crop_size=480).save_pretrained(tmp_path)  # as transformers converted git-base-vqav2
    assert ImageProcessor.from_pretrained(tmp_path, backend="original") == ImageProcessor.original(480)
    assert ImageProcessor.from_pretrained(tmp_path).for_backend("original", "vqa") == vqa


def test_non_square_pixels_run_through_a_tiny_git(tmp_path: Path) -> None:
    """The original's VQA resize gives 320 x 640; the model interpolates its positions to the grid,
    as transformers does with interpolate_pos_encoding."""
    torch.manual_seed(0)
    hf = hf_tiny(vision_config={"image_size": 64, "patch_size": 32})
    ours = GIT.from_pretrained(save_hf(hf, tmp_path / "ck"))
    pixel_values = ImageProcessor.original(480, "vqa")([PICTURES["200x100"]])  # (1, 3, 320, 640)
    input_ids = torch.randint(3, 99, (1, 5))
    with torch.no_grad():
        logits = ours(pixel_values, input_ids)
        theirs = hf(pixel_values=pixel_values, input_ids=input_ids, interpolate_pos_encoding=True).logits
    n_image = 10 * 20 + 1  # 320 / 32 x 640 / 32 patches and CLS
    assert theirs.shape[1] == n_image + 5 and logits.shape == (1, 5, 99)
    torch.testing.assert_close(logits, theirs[:, n_image:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("processor", [ImageProcessor(backend="pil", size=48, crop_size=40),
                                       ImageProcessor.original(480, "vqa")], ids=["pil", "original-vqa"])
def test_backend_round_trips_and_transformers_still_reads_the_file(tmp_path: Path, processor: ImageProcessor) -> None:
    file = processor.save_pretrained(tmp_path)
    assert json.loads(file.read_text())["git_scratch"]["backend"] == processor.backend
    assert ImageProcessor.from_pretrained(tmp_path) == processor
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path)  # the extra entry does not break it
    assert theirs.crop_size["height"] == processor.crop_size and theirs.backend == "torchvision"
    theirs.save_pretrained(tmp_path / "back")  # transformers keeps our entry when it saves
    assert ImageProcessor.from_pretrained(tmp_path / "back") == processor


def test_default_files_stay_transformers_own_and_load_as_torchvision(tmp_path: Path) -> None:
    """No silent change: a file without our entry (every file transformers wrote, 4.x's included) is the
    torchvision backend, and a backend is only what the caller asks for."""
    ImageProcessor().save_pretrained(tmp_path)
    assert "git_scratch" not in json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert ImageProcessor.from_pretrained(tmp_path).backend == "torchvision"
    assert ImageProcessor.from_pretrained(tmp_path, backend="pil") == ImageProcessor(backend="pil")
    ImageProcessor(backend="pil").save_pretrained(tmp_path / "pil")
    assert ImageProcessor.from_pretrained(tmp_path / "pil", backend="torchvision") == ImageProcessor()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ImageProcessor(backend="cv2"), "backend = 'cv2' is not one of torchvision, pil, original"),
    (lambda: ImageProcessor(max_size=640), "max_size = 640 needs backend 'original'"),
    (lambda: ImageProcessor(backend="original", max_size=0), "max_size = 0 needs"),
    (lambda: ImageProcessor().for_backend("original", task="ocr"), "task = 'ocr' is not supported"),
    (lambda: ImageProcessor(backend="original", size=4, max_size=4)([np.zeros((1, 64, 3), np.uint8)]),
     "too elongated for max_size = 4"),
])
def test_bad_settings_are_one_line(make: Any, message: str) -> None:
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("entry", [{"backend": "cv2"}, "pil", {"backend": "pil", "crop": False}])
def test_bad_entry_in_a_file_names_the_file(tmp_path: Path, entry: Any) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**ImageProcessor().to_dict(), "git_scratch": entry}))
    with pytest.raises(ValueError) as error:
        ImageProcessor.from_pretrained(tmp_path)
    assert str(tmp_path / "preprocessor_config.json") in str(error.value) and "\n" not in str(error.value)
