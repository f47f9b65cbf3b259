"""The mask picture is drawn from the real mask and never overwrites without --force."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from git_scratch.cli import main


def test_mask_picture_written_and_protected(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mask.png"
    assert main(["mask", "--image-tokens", "3", "--frames", "2", "--text-tokens", "4", "--left-pad", "1",
                 "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300
    before = out.read_bytes()
    assert main(["mask", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["mask", "--out", str(out), "--text-tokens", "2", "--left-pad", "2", "--force"]) == 2
