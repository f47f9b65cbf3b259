"""The attention picture: one colour scale for all panels by default, shown by a colour bar and
named in the heading; per-panel scaling on request; no title or heading cut off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch.cli import main
from git_scratch.tools.pictures import draw_attention
from tests.hardening.support import make_checkpoint

LONG = ["supercalifragilisticexpialidocious", "WWWWWWWWWWWWWWWWWWWWWWWWWWWW", "##ization", "[SEP]", "a",
        "pneumono-ultramicroscopic", "MMMMMMMMMMMMMMMMMMMMMMMM"]


def heat_images(fig) -> list:
    """The heat maps drawn over the panels (the image and its gray copy use other colour maps)."""
    return [im for ax in fig.axes for im in ax.images if im.get_cmap().name == "jet"]


def test_panels_share_one_colour_scale_with_a_colour_bar(tmp_path: Path, saved_figures: list) -> None:
    levels = [0.1, 0.2, 0.4]
    maps = torch.tensor(levels)[None, :, None, None].expand(1, 3, 4, 4)  # (1, 3, 4, 4): each token one level
    titles = [["a", "b", "c"]]
    for scale, clim, drawn, named in (("shared", (0, 0.4), levels, "one colour scale for all panels"),
                                      ("panel", (0, 1), [1, 1, 1], "each panel scaled to its own maximum")):
        kwargs = {} if scale == "shared" else {"scale": scale}  # shared is the default
        draw_attention(tmp_path / f"{scale}.png", torch.rand(3, 32, 32), maps, titles, ["layer 1"], heading="x",
                       **kwargs)
        fig = saved_figures[-1]
        images = heat_images(fig)
        assert len(images) == 3
        for image, level in zip(images, drawn):
            assert image.get_clim() == pytest.approx(clim)
            assert np.asarray(image.get_array()) == pytest.approx(np.full((32, 32), level))
        (colorbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert colorbar.get_ylabel().startswith("attention weight")
        assert fig.texts[0].get_text().endswith(named)
    with pytest.raises(ValueError, match="shared, panel"):
        draw_attention(tmp_path / "x.png", torch.rand(3, 32, 32), maps, titles, ["layer 1"], heading="x", scale="max")


@pytest.mark.parametrize("n_rows", [1, 2])
def test_no_title_runs_out_of_the_figure(tmp_path: Path, saved_figures: list, n_rows: int) -> None:
    """Long tokens, several lines, a heading longer than the figure is wide: every title's and the
    heading's box, measured on the drawn figure, lies inside it, and titles side by side do not overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    titles = [[f"{word}\n{i}% on image" for i, word in enumerate(LONG)] for _ in range(n_rows)]
    heading = ("a_long_file_name_for_an_image_0000000001.png: " + "a large blue square left of a large red circle " * 5
               + "\nattention averaged over heads, the step that chose each token")
    draw_attention(tmp_path / "long.png", torch.rand(3, 32, 32), torch.rand(n_rows, len(LONG), 4, 4), titles,
                   [f"layer {r}" for r in range(n_rows)], heading=heading)
    (fig,) = saved_figures
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [ax.title for ax in fig.axes if ax.get_title()] + [t for t in fig.texts if t.get_text()]
    assert len(texts) == n_rows * (len(LONG) + 1) + 1
    inside = fig.bbox
    boxes = [t.get_window_extent(renderer) for t in texts]
    for text, box in zip(texts, boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, \
            (text.get_text(), box, inside)
    titles_drawn = boxes[:-1]
    for i, a in enumerate(titles_drawn):
        assert not any(a.overlaps(b) for b in titles_drawn[i + 1:]), texts[i].get_text()


def test_command_scales_per_panel_on_request_and_writes_pdf(tmp_path: Path, saved_figures: list, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "ck")
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "attention.pdf"
    assert main(["attention", str(checkpoint), str(image), "-o", str(out), "--max-new-tokens", "3",
                 "--scale", "panel"]) == 0
    assert out.read_bytes().startswith(b"%PDF")
    assert saved_figures[-1].texts[0].get_text().endswith("each panel scaled to its own maximum")
    capsys.readouterr()
    assert main(["attention", str(checkpoint), str(image), "-o", str(tmp_path / "attention.jpg")]) == 2
    assert ".png, .pdf or .svg" in capsys.readouterr().err
