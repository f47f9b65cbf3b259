"""`git-scratch attention MODEL IMAGE`: where each generated token looks in the image."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.processor import ImageProcessor, sniff_media
from ..tools.attention import attention_maps
from ..tools.pictures import SCALES, check_output, draw_attention
from .common import add_model_args, check_prompt_length, load_pipeline, load_pixels, positive_int, question_ids


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("image", metavar="IMAGE", help="an image file, any size (the checkpoint's processor "
                                                       "resizes and crops it; the picture shows what the model saw)")
    parser.add_argument("--text", help="prompt after [CLS]: a question, or the start of a caption")
    parser.add_argument("--layer", help="decoder layer N (from 0; default: the last), or all (one row each)")
    parser.add_argument("--rollout", action="store_true", help="attention rolled out across all decoder layers")
    parser.add_argument("--max-new-tokens", type=positive_int, default=20, help="longest answer (default 20)")
    parser.add_argument("--scale", choices=SCALES, default="shared",
                        help="shared (default): one colour scale for all panels, so they compare; panel: each "
                             "panel scaled to its own maximum")
    parser.add_argument("--out", "-o", default="attention.png",
                        help="picture to write, .png, .pdf or .svg (default: attention.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    """Draw where each generated token looks in the image: text-to-image attention on the patch grid.

    One panel per generated token, titled with the token and the share of its attention that
    falls on the image patches: the attention of the step that chose it, averaged over heads,
    for one decoder layer (--layer N), each layer (--layer all) or rolled out across layers
    (--rollout; the definition is in tools/attention.py). All panels share one colour scale, shown
    by a colour bar, unless --scale panel. Prints the picture's path and the answer.
    """

    out = Path(args.out)
    check_output(out, args.force)  # before loading the model
    if args.rollout and args.layer is not None:
        raise ValueError("--rollout combines every layer; drop --layer, or drop --rollout to see one layer")
    if sniff_media(args.image) != "image":
        raise ValueError(f"{args.image} is a video; git-scratch attention draws one image, pass an image file")
    pipe = load_pipeline(args)
    cfg, tokenizer = pipe.model.cfg, pipe.tokenizer
    layers = parse_layers(args.layer, cfg.n_layer)
    prompt = question_ids(tokenizer, args.text) if args.text is not None else tokenizer.prompt_ids()
    check_prompt_length(len(prompt), args.max_new_tokens, cfg, args.text)
    pixel_values = load_pixels(args.image, "image", pipe)  # (1, 3, H, W), as caption and vqa see it
    device = pipe.model.lm_head.weight.device
    result = attention_maps(pipe.model, pixel_values.to(device), torch.tensor([prompt], device=device),
                            max_new_tokens=args.max_new_tokens, layers=layers, use_rollout=args.rollout)
    words = [tokenizer.decode([token], skip_special_tokens=False) for token in result.tokens]
    titles = [[f"{word}\n{share:.0%} on image" for word, share in zip(words, row)]
              for row in result.image_share.tolist()]
    answer = tokenizer.decode_answer(result.tokens)
    what = "rollout across all layers" if args.rollout else "attention averaged over heads"
    heading = (f"{Path(args.image).name}: {args.text + ' → ' if args.text else ''}{answer}\n"
               f"{what}, the step that chose each token")
    value = "rollout weight on the patch" if args.rollout else "attention weight on the patch"
    draw_attention(out, displayable(pixel_values[0].cpu(), pipe.processor), result.maps.cpu(), titles, result.rows,
                   heading=heading, scale=args.scale, value=value, force=args.force)
    print(f"{out}\t{answer}")
    return 0


def parse_layers(text: str | None, n_layer: int) -> list[int] | None:
    """--layer: None (the last), "all", or one index."""
    if text is None:
        return None
    if text == "all":
        return list(range(n_layer))
    if not text.isdigit() or int(text) >= n_layer:
        raise ValueError(f"--layer {text!r}: the model has decoder layers 0 to {n_layer - 1}; pass one of them or all")
    return [int(text)]


def displayable(pixel_values: torch.Tensor, processor: ImageProcessor) -> torch.Tensor:
    """(3, H, W) normalised -> (3, H, W) in [0, 1]: the processed image, as the model saw it."""
    x = pixel_values.float()
    if processor.do_normalize:
        x = x * torch.tensor(processor.std)[:, None, None] + torch.tensor(processor.mean)[:, None, None]
    if not processor.do_rescale:
        x = x * (1 / 255)
    return x
