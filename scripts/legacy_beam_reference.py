"""Token ids from an older transformers' GitForCausalLM.generate, for tests/parity/test_beam_legacy_parity.py.

transformers rewrote beam search in 4.50 (vectorised; BeamSearchScorer and BeamHypotheses before).
The test suite installs transformers 5.x, so the older generations' outputs are committed as small
JSON fixtures of token ids, made by this script on tiny random GIT models whose weights come from
seeded generators keyed by parameter name (`fill_weights`): plain torch, independent of any
transformers' initialisation, so the test rebuilds identical weights without the old release.

Regenerate (outside the repository's environment; each release in its own target folder):

    .venv/bin/python -m pip install --target /tmp/tfold/4.26 transformers==4.26.1 tokenizers==0.13.3 \
        'huggingface_hub<0.25' 'numpy<2' --no-deps
    .venv/bin/python -m pip install --target /tmp/tfold/4.49 transformers==4.49.0 'tokenizers<0.22' \
        'huggingface_hub<0.30' --no-deps
    .venv/bin/python -m pip install --target /tmp/tfold/common requests charset_normalizer idna urllib3 certifi
    PYTHONPATH=/tmp/tfold/4.26:/tmp/tfold/common .venv/bin/python scripts/legacy_beam_reference.py \
        tests/parity/fixtures/beam_legacy_4.26.json
    PYTHONPATH=/tmp/tfold/4.49:/tmp/tfold/common .venv/bin/python scripts/legacy_beam_reference.py \
        tests/parity/fixtures/beam_legacy_4.49.json

4.26 gives beams the wrong image when several images are batched (`beams_see_their_image`), so there
its beam runs are made one image at a time and right-padded as its batched output would be.
The script refuses to run under transformers >= 4.50 (that generation is what the live parity tests
compare with) and refuses to overwrite a fixture without --force.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from typing import Any

import torch

from git_scratch.atomic import atomic_write_text

SEED = 1234
STD = 0.2
STD_OF = {"tied": 0.35}  # a tied model at 0.2 repeats one token whatever the image
N_IMAGES = 4
MAX_NEW = 9
EOS, BOS = 2, 1

# Tiny GitConfig keyword sets (transformers' names); tie_word_embeddings is always explicit because
# 4.26's GitConfig inherits PretrainedConfig's default (True) where later releases say False.
BASE: dict[str, Any] = {
    "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 40,
    "max_position_embeddings": 48, "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": 0,
    "tie_word_embeddings": False, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "vision_config": {"hidden_size": 24, "intermediate_size": 30, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 16, "patch_size": 8},
}
MODELS: dict[str, dict[str, Any]] = {
    "image": {},
    "video": {"num_image_with_embedding": 2},
    "tied": {"tie_word_embeddings": True},
    "image24px": {"vision_config": {"image_size": 24}},  # 9 patches, not 4: another number of image tokens
    "deeper": {"num_hidden_layers": 3, "num_attention_heads": 2},
    "text_only": {},  # generate(input_ids=...) without pixel_values: zero image tokens
}

# Beam settings; "never" exists from 4.27 on, so it is skipped by older releases.
BEAMS: list[dict[str, Any]] = [
    {"num_beams": 2},
    {"num_beams": 3},
    {"num_beams": 3, "length_penalty": 0.6},
    {"num_beams": 3, "length_penalty": 2.0, "num_return_sequences": 2},
    {"num_beams": 3, "length_penalty": 0.0},
    {"num_beams": 3, "length_penalty": -1.0},
    {"num_beams": 4, "early_stopping": True},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5},
    {"num_beams": 4, "length_penalty": 1.0, "num_return_sequences": 3},
    {"num_beams": 3, "do_sample": True, "seed": 0},
    {"num_beams": 2, "do_sample": True, "top_k": 0, "length_penalty": 0.6, "seed": 1},
]
# greedy and sampling, to measure whether they changed too
OTHER: list[dict[str, Any]] = [{}, {"min_new_tokens": 3}, {"do_sample": True, "seed": 0},
                               {"do_sample": True, "seed": 1}]
PROMPTS = {"bos": [BOS], "prompt3": [BOS, 17, 33]}  # every row the same prompt: no padding


def config_kwargs(name: str) -> dict[str, Any]:
    """The GitConfig keywords of one model kind."""
    extra = MODELS[name]
    return {**BASE, **extra, "vision_config": {**BASE["vision_config"], **extra.get("vision_config", {})}}


def file_name(name: str) -> str:
    """A parameter's name as checkpoint files spell it: transformers 4.x's attribute, which later
    releases renamed while keeping the file key (`img_temperal_embedding`)."""
    return name.replace("img_temporal_embedding", "img_temperal_embedding")


def fill_weights(model: torch.nn.Module, eos_bias: float, std: float = STD, seed: int = SEED) -> None:
    """Every parameter from its own generator, seeded by SEED and the parameter's file name: N(0, std),
    LayerNorm weights 1 + N(0, 0.1). The output bias of EOS is set to `eos_bias`. The tied output
    weight is the word embedding, so only the embedding's name is drawn."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "output.weight" and model.config.tie_word_embeddings:
                continue
            gen = torch.Generator().manual_seed(seed + zlib.crc32(file_name(name).encode()))
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            is_norm = "norm" in name.lower() and name.endswith("weight")
            param.copy_(1 + 0.1 * values if is_norm else std * values)
        if model.config.tie_word_embeddings:
            model.output.weight = model.git.embeddings.word_embeddings.weight
        model.output.bias[EOS] = eos_bias


def inputs(name: str, seed: int = SEED) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """pixel_values (None for text_only) and the prompts, from a seeded generator."""
    cfg = config_kwargs(name)
    gen = torch.Generator().manual_seed(seed)
    size = cfg["vision_config"]["image_size"]
    frames = cfg.get("num_image_with_embedding")
    shape = (N_IMAGES, frames, 3, size, size) if frames else (N_IMAGES, 3, size, size)
    pixel_values = None if name == "text_only" else torch.randn(shape, generator=gen)
    prompts = {key: torch.tensor([ids] * N_IMAGES) for key, ids in PROMPTS.items()}
    if name == "text_only":  # rows must differ without an image: a different second token per row
        prompts = {key: torch.cat([ids[:, :1], torch.arange(5, 5 + N_IMAGES)[:, None], ids[:, 1:]], 1)
                   for key, ids in prompts.items()}
    return pixel_values, prompts


def run(model: Any, pixel_values: torch.Tensor | None, input_ids: torch.Tensor, kwargs: dict[str, Any],
        per_image: bool = False) -> list:
    """Token ids of one generate call; with `per_image`, one call per image, right-padded with the
    pad id (what the release's own batched output holds after a finished row's EOS)."""
    kwargs = dict(kwargs)
    if "seed" in kwargs:
        torch.manual_seed(kwargs.pop("seed"))
    if per_image and pixel_values is not None:
        rows = [row for i in range(len(input_ids))
                for row in run(model, pixel_values[i:i + 1], input_ids[i:i + 1], kwargs)]
        width = max(len(row) for row in rows)
        return [row + [BASE["pad_token_id"]] * (width - len(row)) for row in rows]
    image = {} if pixel_values is None else {"pixel_values": pixel_values}
    with torch.no_grad():
        out = model.generate(**image, input_ids=input_ids, max_new_tokens=MAX_NEW, **kwargs)
    return out.tolist()


def beams_see_their_image(model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> bool:
    """False where the release gives beams the wrong image when B > 1: 4.26 does not expand
    pixel_values to the beams (the image encoder sees B images for B*K rows) and GIT tiles the image
    features with `.repeat`, so row r sees image r mod B. There beam runs are made one image at a time."""
    seen = []
    hook = model.git.image_encoder.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(len((args or tuple(kwargs.values()))[0])), with_kwargs=True)
    run(model, pixel_values, input_ids, {"num_beams": 2})
    hook.remove()
    return seen[0] == 2 * len(pixel_values)


def pick_eos_bias(transformers: Any, name: str) -> float:
    """The first EOS bias at which greedy ends some rows before the last step and not all of them."""
    pixel_values, prompts = inputs(name)
    for bias in [b / 2 for b in range(100)]:
        model = transformers.GitForCausalLM(transformers.GitConfig(**config_kwargs(name))).eval()
        fill_weights(model, bias, STD_OF.get(name, STD))
        out = torch.tensor(run(model, pixel_values, prompts["bos"], {}))
        ended = (out[:, 1:] == EOS).any(-1)
        if 0 < int(ended.sum()) < len(ended):
            return bias
    raise SystemExit(f"{name}: no EOS bias ends some rows and not others")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) >= (4, 50):
        raise SystemExit(f"transformers {transformers.__version__} is the vectorised beam search; run this under "
                         "an older release (see the docstring)")
    if args.out.exists() and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to overwrite it")
    has_never = (major, minor) >= (4, 27)
    fixture: dict[str, Any] = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
                               "max_new_tokens": MAX_NEW, "regenerate": "scripts/legacy_beam_reference.py",
                               "models": {}}
    for name, extra in MODELS.items():
        bias = pick_eos_bias(transformers, name)
        model = transformers.GitForCausalLM(transformers.GitConfig(**config_kwargs(name))).eval()
        fill_weights(model, bias, STD_OF.get(name, STD))
        pixel_values, prompts = inputs(name)
        with torch.no_grad():
            image = {} if pixel_values is None else {"pixel_values": pixel_values}
            logits = model(**image, input_ids=prompts["prompt3"]).logits[:, -1, :6]
        per_image = pixel_values is not None and not beams_see_their_image(model, pixel_values, prompts["bos"])
        runs = []
        for prompt, input_ids in prompts.items():
            for kwargs in BEAMS + OTHER:
                if kwargs.get("early_stopping") == "never" and not has_never:
                    continue
                one_by_one = per_image and kwargs.get("num_beams", 1) > 1
                runs.append({"prompt": prompt, "kwargs": kwargs,
                             "sequences": run(model, pixel_values, input_ids, kwargs, one_by_one)})
        fixture["models"][name] = {"beams_per_image": per_image, "config": extra, "eos_bias": bias,
                                   "std": STD_OF.get(name, STD), "logits_head": logits.tolist(),
                                   "parameters": sorted(file_name(n) for n, _ in model.named_parameters()),
                                   "runs": runs}
        print(name, "eos bias", bias, len(runs), "runs")
    atomic_write_text(args.out, json.dumps(fixture, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
