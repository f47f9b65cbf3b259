"""The GIT mask, written out by hand: read this test to learn the mask."""

from __future__ import annotations

import torch

from git_scratch.model.mask import git_attention_mask


def test_three_image_three_text_tokens_literal() -> None:
    mask = git_attention_mask(3, torch.ones(1, 3, dtype=torch.bool))
    #                     image      text       <- keys
    expected = torch.tensor([[1, 1, 1,   0, 0, 0],   # image queries see all images, no text
                             [1, 1, 1,   0, 0, 0],
                             [1, 1, 1,   0, 0, 0],
                             [1, 1, 1,   1, 0, 0],   # text queries see all images,
                             [1, 1, 1,   1, 1, 0],   # and text causally
                             [1, 1, 1,   1, 1, 1]], dtype=torch.bool)
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0], expected)


def test_left_padding_blocks_padded_keys_only() -> None:
    text_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    mask = git_attention_mask(2, text_mask)
    expected_row0 = torch.tensor([[1, 1,   0, 0, 0],
                                  [1, 1,   0, 0, 0],
                                  [1, 1,   0, 0, 0],   # the pad query still sees images: no NaN row
                                  [1, 1,   0, 1, 0],   # real text never sees the pad key
                                  [1, 1,   0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected_row0)
    assert torch.equal(mask[1, 0], git_attention_mask(2, text_mask[1:])[0, 0])


def test_every_block_follows_the_rule() -> None:
    n_image, n_text = 5, 7
    text_mask = torch.rand(4, n_text) > 0.3
    mask = git_attention_mask(n_image, text_mask)[:, 0]
    for b in range(4):
        for q in range(n_image + n_text):
            for k in range(n_image + n_text):
                q_text, k_text = q >= n_image, k >= n_image
                if not q_text:
                    rule = not k_text  # image -> image only
                elif not k_text:
                    rule = True  # text -> every image
                else:
                    rule = k <= q and bool(text_mask[b, k - n_image])  # causal, real keys
                assert bool(mask[b, q, k]) == rule, (b, q, k)
    assert mask.any(-1).all(), "no query row may be fully masked"


def test_packed_segments_are_block_diagonal() -> None:
    """Two texts after one image: each sees the image and its own earlier tokens only."""
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    segments = torch.tensor([[1, 1, 2, 2, 2, 0]])
    mask = git_attention_mask(2, text_mask, segments)[0, 0]
    #                     img    text 1   text 2    pad
    expected = torch.tensor([[1, 1,  0, 0,  0, 0, 0,  0],
                             [1, 1,  0, 0,  0, 0, 0,  0],
                             [1, 1,  1, 0,  0, 0, 0,  0],
                             [1, 1,  1, 1,  0, 0, 0,  0],
                             [1, 1,  0, 0,  1, 0, 0,  0],
                             [1, 1,  0, 0,  1, 1, 0,  0],
                             [1, 1,  0, 0,  1, 1, 1,  0],
                             [1, 1,  0, 0,  0, 0, 0,  0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
