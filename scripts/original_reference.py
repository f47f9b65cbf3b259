"""Regenerate the checkpoint, loss and truncation fixtures of tests/original/fixtures/ from the ORIGINAL code.

The original is microsoft/GenerativeImage2Text at commit faae4fb9f34bfc2fce443513ae222e02b9f7e2e9; none of
its code is in this project. This script runs it, untouched, from a work tree outside the project, with
stubs for what cannot run offline, and writes what it computed as small JSON files (scripts/original_reference.md
says what each holds and how the tests use it):

    git -C <bare clone> archive faae4fb9f34bfc2fce443513ae222e02b9f7e2e9 | tar -x -C /tmp/orig_ckpt
    .venv/bin/python scripts/original_reference.py --original /tmp/orig_ckpt

Stubs, written into a temporary directory put first on sys.path, so that nothing is downloaded:
- `azfuse`, `boto3`, `botocore.exceptions`, `requests`, `six`: empty modules (the first four are imported
  by file helpers and BERT's download code, never called here; six is imported and unused);
- `clip.load`: the original downloads OpenAI's weights; the stub builds the same `CLIP` class of the
  original's `layers/CLIP/model.py` at OpenAI's published sizes, random, fp16 as `convert_weights` leaves
  it, so `get_git_model` (untouched) sees the model it would have loaded, only with other numbers.
Weights come from tests/original/weights.py (seeded, in state-dict order), the same function the tests use;
each fixture records their checksum, so a change there shows as such. Pixels are N(0, 1) from
torch.Generator().manual_seed(PIXEL_SEED), as tests/checkpoints/test_original.py draws them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.original.weights import checksum, layout_of, make_weights

COMMIT = "faae4fb9f34bfc2fce443513ae222e02b9f7e2e9"
STUBS = {
    "azfuse/__init__.py": "class File:\n    pass\n",
    "boto3/__init__.py": "",
    "botocore/__init__.py": "",
    "botocore/exceptions.py": "class ClientError(Exception):\n    pass\n",
    "requests/__init__.py": "",
    "six/__init__.py": "",
}
# OpenAI CLIP's published sizes (embed_dim, resolution, layers, width, patch, context, vocab, text width,
# text heads, text layers), for the clip.load stub.
CLIP_SIZES = {"ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
              "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12)}
# The real layouts recorded: one per kind of difference (480 px base, video base, 420 px large).
LAYOUT_VARIANTS = ("GIT_BASE_VQAv2", "GIT_BASE_VATEX", "GIT_LARGE_TEXTVQA")
# The tiny models: the original's own classes with small sizes (get_git_model hard-wires git-base's).
TINY = {
    "image": {"image_size": 32, "patch_size": 8, "vision_width": 48, "vision_layers": 2, "vision_heads": 4,
              "hidden_size": 32, "num_layers": 2, "attention_heads": 4, "feedforward_size": 64,
              "vocab_size": 110, "max_caption_length": 40, "num_image_with_embedding": 0},
    "video": {"image_size": 32, "patch_size": 8, "vision_width": 48, "vision_layers": 2, "vision_heads": 4,
              "hidden_size": 32, "num_layers": 2, "attention_heads": 4, "feedforward_size": 64,
              "vocab_size": 110, "max_caption_length": 40, "num_image_with_embedding": 2},
}
WEIGHT_SEED, PIXEL_SEED, TOKEN_SEED, LOSS_SEED = 16, 17, 18, 19


def import_original(tree: Path, stubs: Path):
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    sys.path[:0] = [str(stubs), str(tree)]
    from generativeimage2text.layers.CLIP import clip
    from generativeimage2text.layers.CLIP import model as clip_model

    def load(name, device="cpu", jit=False):
        model = clip_model.CLIP(*CLIP_SIZES[name])
        clip_model.convert_weights(model)
        return model.eval(), None

    clip.load = load
    from generativeimage2text import model, train
    from generativeimage2text.layers import decoder
    return clip_model, decoder, model, train


class TokenIds:
    """get_git_model reads only these two of its tokenizer."""
    cls_token_id, sep_token_id = 101, 102


def real_layouts(tree: Path, original_model) -> dict:
    import yaml

    layouts = {}
    for variant in LAYOUT_VARIANTS:
        param = yaml.safe_load((tree / "aux_data/models" / variant / "parameter.yaml").read_text()) or {}
        torch.manual_seed(0)
        model = original_model.get_git_model(TokenIds(), param)
        layouts[variant] = {"parameter.yaml": param, "layout": layout_of(model.state_dict())}
    return layouts


def tiny_model(decoder, clip_model, s: dict):
    """The original's CaptioningModel, as get_git_model builds it but at tiny sizes."""
    encoder = clip_model.VisualTransformer(input_resolution=s["image_size"], patch_size=s["patch_size"],
                                           width=s["vision_width"], layers=s["vision_layers"],
                                           heads=s["vision_heads"], output_dim=16)
    encoder.output_grid, encoder.grid_after_ln = True, True  # as get_image_encoder sets them
    textual = decoder.TransformerDecoderTextualHead(
        visual_feature_size=s["vision_width"], vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
        num_layers=s["num_layers"], attention_heads=s["attention_heads"], feedforward_size=s["feedforward_size"],
        max_caption_length=s["max_caption_length"], mask_future_positions=True, padding_idx=0,
        decoder_type="bert_en", visual_projection_type="linearLn")
    return decoder.CaptioningModel(encoder, textual, decoder=None, sos_index=101, eos_index=102, tokenizer=None,
                                   use_history_for_infer=True, loss_type="smooth",
                                   num_image_with_embedding=s["num_image_with_embedding"])


def tiny_cases(decoder, clip_model) -> dict:
    cases = {}
    for name, sizes in TINY.items():
        model = tiny_model(decoder, clip_model, sizes)
        layout = layout_of(model.state_dict())
        weights = make_weights(layout, WEIGHT_SEED)
        model.load_state_dict(weights)
        # Training mode is the forward that returns logits (return_info) and the loss; its dropouts are
        # switched off so the numbers are the eval ones.
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        frames = sizes["num_image_with_embedding"]
        shape = [2, frames, 3, sizes["image_size"], sizes["image_size"]] if frames else \
            [2, 3, sizes["image_size"], sizes["image_size"]]
        pixels = torch.randn(shape, generator=torch.Generator().manual_seed(PIXEL_SEED))
        image = list(pixels.unbind(1)) if frames else pixels  # the original takes a video as a list of frames
        tokens = torch.randint(1, sizes["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(TOKEN_SEED))
        tokens[:, 0] = 101
        every = torch.ones_like(tokens)
        every[:, 0] = 0
        with torch.no_grad():
            out = model.forward_one({"image": image, "caption_tokens": tokens, "need_predict": every},
                                    return_info=True)
            # logits (B * (T - 1), V): every position but the last, whose prediction has no target
            logits = out["feat"].view(2, tokens.shape[1] - 1, -1)
            answer_only = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
            answer_loss = model.forward_one({"image": image, "caption_tokens": tokens, "need_predict": answer_only})
        cases[name] = {
            "sizes": sizes, "weight_seed": WEIGHT_SEED, "pixel_seed": PIXEL_SEED, "pixel_shape": shape,
            "layout": layout, "weights_checksum": checksum(weights), "input_ids": tokens.tolist(),
            "logits": logits.tolist(),  # (B, T - 1, V): the predictions for positions 1..T-1
            "loss_all": out["vl_l_loss"].item(),  # smoothed KL over positions 1..T-1
            "need_predict": answer_only.tolist(), "loss_need_predict": answer_loss["vl_l_loss"].item(),
        }
    return cases


def loss_case(decoder) -> dict:
    """SmoothLabelCrossEntropyLoss as CaptioningModel builds it (eps 0.1, ignore_index = padding 0)."""
    generator = torch.Generator().manual_seed(LOSS_SEED)
    logits = (3 * torch.randn(9, 50, generator=generator)).requires_grad_()
    target = torch.randint(1, 50, (9,), generator=generator)
    target[[2, 7]] = 0  # padding: ignored
    loss = decoder.SmoothLabelCrossEntropyLoss(ignore_index=0)(logits, target)
    loss.backward()
    return {"eps": 0.1, "ignore_index": 0, "logits": logits.detach().tolist(), "target": target.tolist(),
            "loss": loss.item(), "grad": logits.grad.tolist()}


def truncation_cases(train, work: Path) -> dict:
    """train.get_data's token ids and need_predict for texts around max_text_len = 40."""
    from PIL import Image
    from transformers import BertTokenizer

    words = [f"w{i:02d}" for i in range(100)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0-3, then the words: GitTokenizer.word_level's order
    (work / "vocab.txt").write_text("\n".join(specials + words + ["[MASK]"]) + "\n")
    tokenizer = BertTokenizer(str(work / "vocab.txt"), do_lower_case=True)
    Image.new("RGB", (4, 4)).save(work / "image.png")
    lengths = [(0, 10), (0, 45), (5, 3), (30, 9), (30, 10), (30, 11), (45, 5), (2, 50), (39, 1)]
    cases = []
    for n_prefix, n_target in lengths:
        prefix = " ".join(words[i % 100] for i in range(n_prefix))
        target = " ".join(words[(50 + i) % 100] for i in range(n_target))
        data = train.get_data(str(work / "image.png"), prefix, target, tokenizer, lambda d: d)
        cases.append({"prefix": prefix, "target": target, "caption_tokens": data["caption_tokens"].tolist(),
                      "need_predict": data["need_predict"].tolist()})
    return {"words": words, "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "cases": cases}


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps({"original_commit": COMMIT, "made_by": "scripts/original_reference.py", **data},
                               separators=(",", ":")) + "\n")
    print(f"{path}: {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="work tree of the original at " + COMMIT)
    parser.add_argument("--out", type=Path, default=ROOT / "tests/original/fixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip_model, decoder, original_model, train = import_original(args.original.resolve(), Path(tmp))
        args.out.mkdir(parents=True, exist_ok=True)
        write(args.out / "checkpoint_layouts.json", {"variants": real_layouts(args.original, original_model)})
        write(args.out / "checkpoint_tiny.json", {"cases": tiny_cases(decoder, clip_model)})
        write(args.out / "loss_smooth.json", loss_case(decoder))
        write(args.out / "truncation.json", truncation_cases(train, Path(tmp)))


if __name__ == "__main__":
    main()
