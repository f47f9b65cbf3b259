"""The mask picture is drawn from the real mask (GIT's, or a variant's), in the format its name
asks for, readable at git-base's size, and never overwrites without --force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT
from git_scratch.cli import main
from git_scratch.model.mask import git_attention_mask
from git_scratch.tools.pictures import draw_mask
from tests.conftest import tiny_config


def test_mask_picture_written_and_protected(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mask.png"
    assert main(["mask", "--image-tokens", "3", "--frames", "2", "--text-tokens", "4", "--left-pad", "1",
                 "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300
    before = out.read_bytes()
    assert main(["mask", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["mask", "--out", str(out), "--text-tokens", "2", "--left-pad", "2", "--force"]) == 2


def drawn(fig) -> torch.Tensor:
    """The mask a saved figure shows, (N + T, N + T) bool, read back from its one image of cells."""
    (mesh,) = fig.axes[0].collections
    return torch.from_numpy(np.asarray(mesh.get_array())).bool()


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_the_extension_picks_the_format(tmp_path: Path, suffix: str, magic: bytes) -> None:
    out = tmp_path / f"mask{suffix}"
    assert main(["mask", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(magic)
    if suffix == ".svg":
        assert b"<svg" in data[:1000]


def test_another_extension_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    for name in ("mask.jpg", "mask"):
        assert main(["mask", "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ".png, .pdf or .svg" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("frames", [1, 2])
def test_a_git_base_sized_mask_is_drawn_as_labelled_blocks(tmp_path: Path, saved_figures: list, frames: int) -> None:
    """197 image tokens a frame (git-base) and 20 text tokens: per-token cells would make a figure
    of 70 inches and unreadable labels; the blocks are drawn at a fixed size instead."""
    out = tmp_path / "big.png"
    draw_mask(out, n_image=197, frames=frames, n_text=20, left_pad=3)
    assert max(Image.open(out).size) <= 1000
    (fig,) = saved_figures
    ax = fig.axes[0]
    image = ["image\n197"] if frames == 1 else ["frame 0\n197", "frame 1\n197"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [*image, "text\n20, 3 pad"]
    n = 197 * frames
    blocks = [t.get_text() for t in ax.texts]
    assert blocks == [f"image → image\n{n} × {n}\nall allowed", f"image → text\n{n} × 20\nall blocked",
                      f"text → image\n20 × {n}\nall allowed", "text → text\n20 × 20\ncausal"]
    text_mask = (torch.arange(20) >= 3)[None]
    assert torch.equal(drawn(fig), git_attention_mask(n, text_mask)[0, 0])  # the data, not a schematic
    assert "3 left pads: blocked as key, still sees the image" in ax.get_title()


class TextSeesOnlyCLS(GIT):
    """A variant whose text tokens attend to the image's CLS token only, not to its patches."""

    def attention_mask(self, n_image: int, text_mask: torch.Tensor,
                       segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        mask = super().attention_mask(n_image, text_mask, segment_ids).clone()
        mask[..., n_image:, 1:n_image] = False
        return mask


def test_a_variant_mask_is_drawn_as_it_is(tmp_path: Path, saved_figures: list) -> None:
    model = TextSeesOnlyCLS(tiny_config())
    text_mask = torch.ones(1, 4, dtype=torch.bool)
    draw_mask(tmp_path / "fn.png", model.attention_mask, n_image=5, n_text=4)
    draw_mask(tmp_path / "tensor.png", model.attention_mask(5, text_mask)[0, 0], n_image=5, n_text=4)
    expected = model.attention_mask(5, text_mask)[0, 0]
    changed = expected != git_attention_mask(5, text_mask)[0, 0]
    assert changed[5:, 1:5].all() and changed.sum() == 16  # the override differs there only
    for fig in saved_figures:
        assert torch.equal(drawn(fig), expected)
        assert "text → image\n4 × 5\n20% allowed" in [t.get_text() for t in fig.axes[0].texts]
    with pytest.raises(ValueError, match="add up to the mask's size"):
        draw_mask(tmp_path / "wrong.png", expected, n_image=4, n_text=4)


def test_command_draws_a_checkpoints_own_mask(tmp_path: Path, saved_figures: list,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--model asks the loaded model for its mask, at the checkpoint's 17 image tokens (16 patches
    + CLS); a variant's override is what gets drawn."""
    from git_scratch.checkpoints import files

    checkpoint = tmp_path / "ck"
    GIT.from_config(tiny_config()).save_pretrained(checkpoint)
    text_mask = torch.ones(1, 4, dtype=torch.bool)
    assert main(["mask", "--model", str(checkpoint), "--out", str(tmp_path / "git.png")]) == 0
    assert torch.equal(drawn(saved_figures[-1]), git_attention_mask(17, text_mask)[0, 0])

    load = files.load_pretrained

    def load_variant(*args, **kwargs) -> GIT:
        model = load(*args, **kwargs)
        model.__class__ = TextSeesOnlyCLS  # the checkpoint, as a variant's code would load it
        return model

    monkeypatch.setattr(files, "load_pretrained", load_variant)
    assert main(["mask", "--model", str(checkpoint), "--out", str(tmp_path / "variant.png")]) == 0
    variant = drawn(saved_figures[-1])
    assert torch.equal(variant, TextSeesOnlyCLS(tiny_config()).attention_mask(17, text_mask)[0, 0])
    assert not variant[17:, 1:17].any() and variant[17:, 0].all()
