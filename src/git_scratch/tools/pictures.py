"""Pictures of the model for people: an attention mask, drawn from the mask itself (model/mask.py's,
or a model's own `attention_mask`), and where generated tokens look in the image (maps from
attention.py). The file's extension picks the format: PNG, or PDF and SVG as vectors for a paper.

Figures are built with matplotlib's `Figure` directly, not pyplot: no global state, nothing to close.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import atomic_write
from ..model.mask import git_attention_mask

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.text import Text

FORMATS = ("png", "pdf", "svg")
# Up to this many tokens a side every cell of the mask is drawn and labelled. git-base has 197
# image tokens, whose cells would be a few pixels each: beyond the limit the picture shows the
# blocks, labelled with their sizes, at a fixed size.
CELL_LIMIT = 32
# GIT.attention_mask's signature: (n_image, text_mask (B, T)) -> (B, 1, N + T, N + T), True = may attend
MaskFunction = Callable[..., torch.Tensor]
SCALES = {"shared": "one colour scale for all panels", "panel": "each panel scaled to its own maximum"}


def check_output(path: Path, force: bool) -> str:
    """The picture format `path` names; refuses to overwrite it without `force`. Commands call it
    before loading a model, so a wrong name fails at once."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    fmt = path.suffix.lower().removeprefix(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: {path.suffix or 'no extension'} is not a picture format git-scratch writes; "
                         "end the name with .png, .pdf or .svg")
    return fmt


def save(fig: Figure, path: Path, force: bool) -> None:
    fmt = check_output(path, force)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt))


def draw_mask(path: Path, mask: torch.Tensor | MaskFunction | None = None, *, n_image: int = 4, n_text: int = 4,
              frames: int = 1, left_pad: int = 0, title: str = "GIT attention mask", force: bool = False) -> None:
    """Draw a mask over `frames` x `n_image` image tokens and `n_text` text tokens (the first
    `left_pad` of them padding); rows are queries, columns keys. `mask` is model/mask.py's by
    default, or a boolean (N + T, N + T) tensor, or a function with GIT.attention_mask's signature
    (a variant's `model.attention_mask`). Each block is labelled with its size and, read from the
    mask, what it allows. Up to CELL_LIMIT tokens a side the cells are to scale and each token is
    labelled; beyond, image and text each get at least a third of the picture, so a 20-token text
    beside 197 image tokens still shows its causal triangle and padding."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    check_output(path, force)
    if min(n_image, n_text, frames) < 1 or not 0 <= left_pad < n_text:
        raise ValueError("need at least one image token, text token and frame, and fewer pads than text tokens")
    n = n_image * frames
    allowed = mask_matrix(mask, n, n_text, left_pad)  # (N + T, N + T)
    cells = len(allowed) <= CELL_LIMIT
    image_share = n / len(allowed) if cells else min(max(n / len(allowed), 1 / 3), 2 / 3)
    edges = torch.cat([torch.linspace(0, image_share, n + 1), torch.linspace(image_share, 1, n_text + 1)[1:]])

    size = max(4.0, 0.32 * len(allowed) + 2) if cells else 7.0
    fig = Figure(figsize=(size, size), dpi=120, layout="constrained")
    ax = fig.subplots()
    # rasterized beyond the limit: a video's 1202 x 1202 cells would be 1.4 million rectangles in a PDF or SVG
    ax.pcolormesh(edges.numpy(), edges.numpy(), allowed.int().numpy(), cmap=ListedColormap(["#f2f2f2", "#2b6cb0"]),
                  vmin=0, vmax=1, rasterized=not cells)
    ax.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xlabel="key (attended to)", ylabel="query (attending)")
    (label_cells if cells else label_blocks)(ax, edges, n_image, frames, left_pad)
    annotate_blocks(ax, allowed, edges, n, left_pad)
    note = f"\n{pad_note(allowed, n, left_pad)}" if left_pad else ""
    ax.set_title(f"{title} (blue = may attend){note}", fontsize=10)
    save(fig, path, force)


def mask_matrix(mask: torch.Tensor | MaskFunction | None, n: int, n_text: int, left_pad: int) -> torch.Tensor:
    """The (N + T, N + T) boolean mask to draw: GIT's, the one given, or a mask function's for one
    row of `n` image tokens and `n_text` text tokens, the first `left_pad` of them padding."""
    if mask is None:
        mask = git_attention_mask
    if callable(mask):
        text_mask = torch.arange(n_text) >= left_pad  # (T,)
        mask = mask(n, text_mask[None])[0, 0]  # (N + T, N + T)
    if tuple(mask.shape) != (n + n_text, n + n_text):
        raise ValueError(f"the mask is {tuple(mask.shape)} but {n} image and {n_text} text tokens make "
                         f"{n + n_text} a side; pass n_image, frames and n_text that add up to the mask's size")
    return mask.detach().bool().cpu()


def label_cells(ax: Axes, edges: torch.Tensor, n_image: int, frames: int, left_pad: int) -> None:
    """A tick per token (i0.., f0:i0.. for a video's frames, pad, t0..) and the blocks' boundaries."""
    n_text = len(edges) - 1 - n_image * frames
    labels = [f"f{f}:i{i}" if frames > 1 else f"i{i}" for f in range(frames) for i in range(n_image)]
    labels += ["pad" if t < left_pad else f"t{t - left_pad}" for t in range(n_text)]
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    ax.set_xticks(centres, labels, rotation=90, fontsize=8)
    ax.set_yticks(centres, labels, fontsize=8)
    draw_boundaries(ax, edges, n_image, frames, left_pad)


def label_blocks(ax: Axes, edges: torch.Tensor, n_image: int, frames: int, left_pad: int) -> None:
    """A tick per block naming its size (each frame's image tokens, then the text with its pads: a
    band of a few pads has no room for a label of its own) and the blocks' boundaries."""
    n = n_image * frames
    n_text = len(edges) - 1 - n
    starts = [f * n_image for f in range(frames)] + [n, len(edges) - 1]
    centres = [(edges[a] + edges[b]).item() / 2 for a, b in pairwise(starts)]
    labels = [f"frame {f}\n{n_image}" if frames > 1 else f"image\n{n_image}" for f in range(frames)]
    labels.append(f"text\n{n_text}" + (f", {left_pad} pad" if left_pad else ""))
    ax.set_xticks(centres, labels, fontsize=8)
    ax.set_yticks(centres, labels, fontsize=8)
    ax.tick_params(length=0)
    draw_boundaries(ax, edges, n_image, frames, left_pad)


def draw_boundaries(ax: Axes, edges: torch.Tensor, n_image: int, frames: int, left_pad: int) -> None:
    """Solid between image and text, dashed between frames, dotted after the pads."""
    n = n_image * frames
    lines = [(n, "-", 1.5, "black")] + [(f * n_image, "--", 0.6, "grey") for f in range(1, frames)]
    if left_pad:
        lines.append((n + left_pad, ":", 0.8, "grey"))
    for token, style, width, colour in lines:
        ax.axhline(edges[token].item(), color=colour, linewidth=width, linestyle=style)
        ax.axvline(edges[token].item(), color=colour, linewidth=width, linestyle=style)


def annotate_blocks(ax: Axes, allowed: torch.Tensor, edges: torch.Tensor, n: int, left_pad: int) -> None:
    """Name the four blocks, query -> key, with their sizes and what each allows, read from the
    mask itself so that a variant's picture says what the variant does."""
    n_text = len(allowed) - n
    # GIT's text block: earlier and own tokens, no pads
    causal = torch.ones(n_text, n_text, dtype=torch.bool).tril() & (torch.arange(n_text) >= left_pad)  # (T, T)
    image, text = slice(0, n), slice(n, None)
    split = edges[n].item()
    blocks = [("image → image", image, image, split / 2, split / 2),
              ("image → text", image, text, (split + 1) / 2, split / 2),
              ("text → image", text, image, split / 2, (split + 1) / 2),
              ("text → text", text, text, split + 0.72 * (1 - split), split + 0.25 * (1 - split))]  # off the triangle
    for name, rows, columns, x, y in blocks:
        block = allowed[rows, columns]
        if block.all():
            what = "all allowed"
        elif not block.any():
            what = "all blocked"
        elif block.shape == causal.shape and torch.equal(block, causal):
            what = "causal"
        else:
            what = f"{block.float().mean().item():.0%} allowed"
        ax.text(x, y, f"{name}\n{block.shape[0]} × {block.shape[1]}\n{what}", ha="center", va="center", fontsize=9,
                color="#c05621", weight="bold", bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none"})


def pad_note(allowed: torch.Tensor, n: int, left_pad: int) -> str:
    """What the mask does with the left pads, read from it: GIT blocks them as keys only."""
    pads = slice(n, n + left_pad)
    as_key = "blocked as key" if not allowed[:, pads].any() else "seen as key"
    as_query = "still sees the image" if allowed[pads, :n].all() else "does not see all of the image"
    return f"{left_pad} left pad{'s' if left_pad > 1 else ''}: {as_key}, {as_query}"


def draw_attention(path: Path, image: torch.Tensor, maps: torch.Tensor, titles: list[list[str]], rows: list[str],
                   *, heading: str, scale: str = "shared", value: str = "attention weight", force: bool = False,
                   columns: int = 6) -> None:
    """One panel per token: `maps` (R, K, grid_h, grid_w) upsampled onto `image` (3, H, W) in [0, 1].
    `scale` "shared" puts every panel on one colour scale, from 0 to the largest weight, so panels
    can be compared; "panel" scales each to its own maximum, which shows where a token that gives
    the image little attention looks. A colour bar says what the colour is (`value`, what the maps
    hold) and the heading gets a line naming the scale. `titles` (R lists of K) head the panels,
    `rows` (R) name the layers. One row of maps wraps after `columns` panels; several rows (layers)
    do not wrap. Titles are rewrapped to their panel's width and the heading to the figure's, so
    long tokens are never cut off."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    check_output(path, force)
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not a colour scale; pass one of {', '.join(SCALES)}")
    n_rows, n_tokens = maps.shape[:2]
    heat = torch.nn.functional.interpolate(maps.float(), size=image.shape[-2:], mode="bilinear")  # (R, K, H, W)
    if scale == "panel":
        heat = heat / heat.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]
    norm = Normalize(0, 1 if scale == "panel" else max(heat.max().item(), 1e-12))  # one object: one scale
    picture = image.permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)
    gray = picture @ [0.299, 0.587, 0.114]  # (H, W): under the heat map, so its colours are the map's alone
    # panels: (row of the figure, column, map row, token); the first panel of each map row is the image alone
    wrap = columns if n_rows == 1 else n_tokens + 1
    panels = [(r * ((n_tokens + wrap) // wrap) + i // wrap, i % wrap, r, i - 1)
              for r in range(n_rows) for i in range(n_tokens + 1)]
    fig_rows = max(p[0] for p in panels) + 1
    fig_cols = min(wrap, n_tokens + 1)
    fig = Figure(figsize=(2.2 * fig_cols + 0.8, 2.5 * fig_rows + 0.8), dpi=110, layout="constrained")
    axes = fig.subplots(fig_rows, fig_cols, squeeze=False)
    renderer = FigureCanvasAgg(fig).get_renderer()  # to measure text before the figure is drawn
    for ax in axes.flat:
        ax.axis("off")
    for fig_row, col, r, k in panels:
        ax = axes[fig_row, col]
        if k < 0:
            ax.imshow(picture)
            title = ax.set_title(rows[r] if n_rows > 1 else "input (processed)", fontsize=9, weight="bold")
        else:
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
            ax.imshow(heat[r, k].numpy(), cmap="jet", alpha=0.5, norm=norm)
            title = ax.set_title(titles[r][k], fontsize=9)
        fit_width(title, 2.1 * fig.dpi, renderer)
    label = value if scale == "shared" else f"{value} / the panel's maximum"
    fig.colorbar(ScalarMappable(norm, "jet"), ax=axes, shrink=0.8, fraction=min(0.15, 0.6 / fig.get_figwidth()),
                 label=label)
    suptitle = fig.suptitle(f"{heading}\n{SCALES[scale]}", fontsize=10)
    fit_width(suptitle, 0.95 * fig.get_figwidth() * fig.dpi, renderer)
    save(fig, path, force)


def fit_width(text: Text, width: float, renderer: RendererBase) -> None:
    """Rewrap `text`'s lines, narrower and narrower, until it is at most `width` pixels wide."""
    lines = text.get_text().split("\n")
    chars = max(map(len, lines))
    while text.get_window_extent(renderer).width > width and chars > 1:
        chars -= 1
        text.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
