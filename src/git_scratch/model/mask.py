"""The one attention mask that defines GIT.

Masks in git_scratch are boolean with True meaning "may attend", the convention of
`torch.nn.functional.scaled_dot_product_attention`. Every other module relies on that.

Letters: B batch, N image tokens, T text tokens.
"""

from __future__ import annotations

import torch


def git_attention_mask(n_image: int, text_mask: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Build the mask over the sequence `[image tokens ; text tokens]`.

    `text_mask` is (B, T), True (or 1) for a real text token and False for padding. Returns
    (B, 1, N + T, N + T), True where the query (row) may attend to the key (column):

                    keys:  image (N)         text (T)
                         +-----------------+-----------------+
        queries: image   |  all: images    |  none: image    |
                  (N)    |  see each other |  never sees text|
                         +-----------------+-----------------+
                 text    |  all: text sees |  causal, and    |
                  (T)    |  every image    |  no padded keys |
                         +-----------------+-----------------+

    Image tokens never attend to text, so their hidden states (and keys and values) do not
    depend on the text at all: generation computes them once per image and reuses them.
    Padding is blocked as a key only. A padded query row still sees the image tokens, so no
    row is ever fully masked and softmax never returns NaN; its output is simply ignored.

    Packing: `segment_ids` (B, T) puts several texts about the same image in one row,
    `[image ; text 1 ; text 2 ...]`. Text then sees only earlier tokens of its own segment
    (block-diagonal causal), so each text gets exactly the logits it would get alone, while the
    image is encoded once for all of them (training uses this; see data/manifest.py).
    """
    batch, n_text = text_mask.shape
    device = text_mask.device
    n = n_image + n_text
    is_text = torch.arange(n, device=device) >= n_image  # (N+T,)
    pos = torch.arange(n, device=device)
    causal = pos[:, None] >= pos[None, :]  # (N+T, N+T): key not after query
    # A key is visible when the query is text (causal over all earlier keys, images included)
    # or when both are image tokens (bidirectional among images).
    allowed = torch.where(is_text[:, None], causal, ~is_text[None, :])  # (N+T, N+T)
    key_real = torch.cat([torch.ones(batch, n_image, dtype=torch.bool, device=device), text_mask.bool()], dim=1)
    mask = allowed[None, None] & key_real[:, None, None, :]  # (B, 1, N+T, N+T)
    if segment_ids is not None:
        seg = torch.cat([torch.zeros(batch, n_image, dtype=segment_ids.dtype, device=device), segment_ids], dim=1)
        same = seg[:, :, None] == seg[:, None, :]  # (B, N+T, N+T)
        mask = mask & (same | ~is_text[None, None, :])[:, None]  # text keys only within one segment
    return mask
