"""Pictures of the model for people: GIT's attention mask, drawn from model/mask.py itself, and where
generated tokens look in the image (maps from attention.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_write
from ..model.mask import git_attention_mask


def draw_mask(path: Path, *, n_image: int = 4, n_text: int = 4, frames: int = 1, left_pad: int = 0,
              force: bool = False) -> None:
    """Draw the mask for `frames` x `n_image` image tokens and `n_text` text tokens (the first
    `left_pad` of them padding), with the blocks labelled. Rows are queries, columns keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    if min(n_image, n_text, frames) < 1 or not 0 <= left_pad < n_text:
        raise ValueError("need at least one image token, text token and frame, and fewer pads than text tokens")
    n = n_image * frames
    text_mask = torch.arange(n_text) >= left_pad
    mask = git_attention_mask(n, text_mask[None])[0, 0].int().numpy()  # (N + T, N + T)
    labels = [f"f{f}:i{i}" if frames > 1 else f"i{i}" for f in range(frames) for i in range(n_image)]
    labels += ["pad" if t < left_pad else f"t{t - left_pad}" for t in range(n_text)]

    size = max(4.0, 0.32 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    ax.imshow(mask, cmap=ListedColormap(["#f2f2f2", "#2b6cb0"]), vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.axhline(n - 0.5, color="black", linewidth=1.5)
    ax.axvline(n - 0.5, color="black", linewidth=1.5)
    for f in range(1, frames):
        ax.axhline(f * n_image - 0.5, color="grey", linewidth=0.6, linestyle="--")
        ax.axvline(f * n_image - 0.5, color="grey", linewidth=0.6, linestyle="--")
    blocks = [(n / 2, n / 2, "image ↔ image\nbidirectional"), (n + n_text / 2, n / 2, "image → text\nblocked"),
              (n / 2, n + n_text / 2, "text → image\nfull"), (n + 0.7 * n_text, n + 0.3 * n_text, "text → text\ncausal")]
    for x, y, text in blocks:
        ax.text(x - 0.5, y - 0.5, text, ha="center", va="center", fontsize=9, color="#c05621", weight="bold",
                bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none"})
    title = "GIT attention mask (blue = may attend)"
    if left_pad:
        title += f"\n{left_pad} left pad{'s' if left_pad > 1 else ''}: blocked as key, still sees the image"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def draw_attention(path: Path, image: torch.Tensor, maps: torch.Tensor, titles: list[list[str]], rows: list[str],
                   *, heading: str, force: bool = False, columns: int = 6) -> None:
    """One panel per token: `maps` (R, K, grid_h, grid_w) upsampled onto `image` (3, H, W) in
    [0, 1], each panel scaled to its own maximum. `titles` (R lists of K) head the panels, `rows`
    (R) name the layers. One row of maps wraps after `columns` panels; several rows (layers) do not wrap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    n_rows, n_tokens = maps.shape[:2]
    heat = torch.nn.functional.interpolate(maps.float(), size=image.shape[-2:], mode="bilinear")  # (R, K, H, W)
    heat = heat / heat.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]
    picture = image.permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)
    gray = picture @ [0.299, 0.587, 0.114]  # (H, W): under the heat map, so its colours are the map's alone
    # panels: (row of the figure, column, map row, token); the first panel of each map row is the image alone
    wrap = columns if n_rows == 1 else n_tokens + 1
    panels = [(r * ((n_tokens + wrap) // wrap) + i // wrap, i % wrap, r, i - 1)
              for r in range(n_rows) for i in range(n_tokens + 1)]
    fig_rows = max(p[0] for p in panels) + 1
    fig_cols = min(wrap, n_tokens + 1)
    fig, axes = plt.subplots(fig_rows, fig_cols, figsize=(2.2 * fig_cols, 2.5 * fig_rows + 0.6), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for fig_row, col, r, k in panels:
        ax = axes[fig_row, col]
        if k < 0:
            ax.imshow(picture)
            ax.set_title(rows[r] if n_rows > 1 else "input (processed)", fontsize=9, weight="bold")
            continue
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat[r, k].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(titles[r][k], fontsize=9)
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
