"""`GitProcessor`: images and text to the model's inputs in one call, like transformers' GitProcessor.

    processor = GitProcessor.from_pretrained(path)
    inputs = processor(images=image, text="a cat on a mat")
    inputs.pixel_values    (B, 3, H, W)   ImageProcessor's, equal to transformers' to 1e-5
    inputs.input_ids       (B, T)         [CLS] text [SEP], transformers' ids
    inputs.attention_mask  (B, T)

It is the image processor and the tokenizer side by side and nothing more: each key is what
that part returns (processor.py, tokenizer.py), with transformers' keyword names. Two
differences, both on purpose: `return_tensors` defaults to "pt" (GIT only takes tensors), and
there is no `token_type_ids`: GIT has no token types, and without them `model(**inputs)` works.
Generation prompts are [CLS] + question with no [SEP], left-padded: `tokenizer.batch_prompts`,
or `model.answer` with `tokenizer.prompt_ids`.

Letters: B batch, T text tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from .inputs import ModelInputs
from .processor import ImageInput, ImageProcessor
from .tokenizer import GitTokenizer


class GitProcessor:
    """An ImageProcessor and a GitTokenizer called together; either part is also usable alone."""

    def __init__(self, image_processor: ImageProcessor, tokenizer: GitTokenizer) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: int | None = None) -> GitProcessor:
        """Both parts from one checkpoint directory: the image processor as transformers of any version
        saved it (processor_config.json or preprocessor_config.json), the tokenizer files."""
        return cls(ImageProcessor.from_pretrained(path, image_size), GitTokenizer.from_pretrained(path))

    def save_pretrained(self, path: str | Path) -> None:
        """Write both parts' files into `path`, each atomically (temp file, then rename)."""
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def __call__(self, images: ImageInput | Sequence[ImageInput] | None = None,
                 text: str | Sequence[str] | None = None, *,
                 return_tensors: Literal["pt", "np"] | None = "pt",
                 padding: bool | Literal["longest", "max_length", "do_not_pad"] = False,
                 truncation: bool = False, max_length: int | None = None, add_special_tokens: bool = True,
                 padding_side: Literal["right", "left"] = "right") -> ModelInputs:
        """{"input_ids", "attention_mask"} for `text`, {"pixel_values"} for `images`, or all three.

        The text keywords are the tokenizer's (GitTokenizer.__call__), the images any kind
        ImageProcessor takes. return_tensors "pt" gives tensors, "np" arrays, None lists (pixel
        values as a list of (3, H, W) tensors, as transformers gives them).
        """
        if images is None and text is None:
            raise ValueError("GitProcessor got neither images nor text; pass images=..., text=... or both")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors = {return_tensors!r} is not supported; use 'pt' (the default), "
                             "'np' or None (lists)")
        inputs = ModelInputs()
        if text is not None:
            inputs.update(self.tokenizer(text, add_special_tokens=add_special_tokens, padding=padding,
                                         truncation=truncation, max_length=max_length,
                                         padding_side=padding_side, return_tensors=return_tensors))
        if images is not None:
            pixel_values: torch.Tensor = self.image_processor(images)  # (B, 3, H, W)
            if return_tensors == "np":
                inputs["pixel_values"] = pixel_values.numpy()
            else:  # None: one (3, H, W) tensor per image, as transformers' torchvision backend gives them
                inputs["pixel_values"] = pixel_values if return_tensors == "pt" else list(pixel_values)
        return inputs

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The tokenizer's decode: [UNK] and ids it does not have stay visible."""
        return self.tokenizer.decode(ids, skip_special_tokens)

    def batch_decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor,
                     skip_special_tokens: bool = True) -> list[str]:
        """The tokenizer's batch_decode: one string per row."""
        return self.tokenizer.batch_decode(sequences, skip_special_tokens)
