"""The variant layout (checkpoints/variant.py): a changed model saved with the builder that
rebuilds it, read back by the same loader as the hub layout, and its mistakes as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import git_scratch
from git_scratch import GIT, TrainConfig, save_variant, train
from git_scratch.checkpoints.variant import builder_of
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from tests.checkpoints.variant_models import GatedGIT
from tests.conftest import tiny_config

BUILDER = "tests.checkpoints.variant_models:build"


def gated(**overrides: object) -> GIT:
    torch.manual_seed(0)
    return GatedGIT(tiny_config(**overrides)).eval()


def logits(model: GIT) -> torch.Tensor:
    torch.manual_seed(1)
    pixel_values, input_ids = torch.randn(2, 3, 32, 32), torch.randint(3, 99, (2, 7))
    with torch.no_grad():
        return model(pixel_values, input_ids)


def test_saved_variant_loads_back_with_identical_logits(tmp_path: Path) -> None:
    """Tied embeddings included: safetensors stores the shared tensor once, loading ties it again."""
    model = gated(tie_embeddings=True)
    rng = torch.get_rng_state()
    save_variant(model, tmp_path / "v", BUILDER)
    git_scratch.load(tmp_path / "v")
    assert torch.equal(torch.get_rng_state(), rng)  # the builds behind the check and the load leave the RNG alone
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["model.safetensors", "variant.json"]
    spec = json.loads((tmp_path / "v" / "variant.json").read_text())
    assert spec["builder"] == BUILDER and spec["config"] == model.cfg.to_dict()
    assert spec["tied"] == {"lm_head.weight": "embed.word.weight"}
    stored = load_file(tmp_path / "v" / "model.safetensors")
    assert {"image_gate", "final_norm.weight", "blocks.0.attn.qkv.weight"} <= set(stored)
    assert "lm_head.weight" not in stored
    plain_load = git_scratch.load(tmp_path / "v", fast=False)
    assert type(plain_load) is GatedGIT and builder_of(plain_load) == BUILDER and not plain_load.training
    assert plain_load.lm_head.weight is plain_load.embed.word.weight
    torch.testing.assert_close(logits(plain_load), logits(model), atol=0, rtol=0)
    fast = GIT.from_pretrained(tmp_path / "v")  # accel.optimize, as the hub path: rounding only
    assert git_scratch.accel.is_optimized(fast)
    torch.testing.assert_close(logits(fast), logits(model), atol=1e-5, rtol=0)
    save_variant(plain_load, tmp_path / "again")  # a loaded variant keeps its builder
    assert json.loads((tmp_path / "again" / "variant.json").read_text())["builder"] == BUILDER


def test_save_variant_refuses_what_would_not_load(tmp_path: Path) -> None:
    model = gated()
    with pytest.raises(ValueError, match=r"needs builder='package\.module:function'"):
        save_variant(model, tmp_path / "none")
    with pytest.raises(ValueError, match=r"does not rebuild this model \(it lacks final_norm\.bias, "
                                         r"final_norm\.weight, image_gate\).*same change"):
        save_variant(model, tmp_path / "plain", "tests.checkpoints.variant_models:plain")
    save_variant(model, tmp_path / "v", BUILDER)
    with pytest.raises(FileExistsError, match="--force"):
        save_variant(model, tmp_path / "v", BUILDER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def spoil(directory: Path, **changes: object) -> Path:
    path = directory / "variant.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return directory


@pytest.mark.parametrize(("builder", "needles"), [
    ("no_such_module_1f2e:build", ["cannot be imported (no module named 'no_such_module_1f2e')", "PYTHONPATH"]),
    ("tests.no_such_module:build", ["no module named 'tests.no_such_module'", "PYTHONPATH"]),
    ("tests.checkpoints.variant_models:nope", ["has no nope", "after ':'"]),
    ("tests.checkpoints.variant_models:not_a_model", ["returned a str, not a GIT"]),
    ("tests.checkpoints.variant_models:plain", ["does not fit the model tests.checkpoints.variant_models:plain builds",
                                                "unexpected final_norm.bias, final_norm.weight, image_gate"]),
    ("not a builder", ["is not package.module:function"]),
    (None, ["names no builder", "official_layout=False"]),
], ids=["no-module", "no-submodule", "no-function", "not-a-model", "weights-do-not-fit", "malformed", "null"])
def test_bad_variant_is_one_line(tmp_path: Path, builder: str | None, needles: list[str]) -> None:
    save_variant(gated(), tmp_path / "v", BUILDER)
    with pytest.raises(ValueError) as e:
        git_scratch.load(spoil(tmp_path / "v", builder=builder))
    message = str(e.value)
    assert "\n" not in message and "; " in message, message
    assert all(needle in message for needle in needles), message


def test_weights_of_another_shape_are_named(tmp_path: Path) -> None:
    save_variant(gated(), tmp_path / "v", BUILDER)
    with pytest.raises(ValueError, match=r"embed\.word\.weight is \(99, 48\) in the file, "
                                         r"\(120, 48\) in the model") as e:
        git_scratch.load(spoil(tmp_path / "v", config=tiny_config(vocab_size=120).to_dict()))
    assert "\n" not in str(e.value)


def test_train_with_a_builder_writes_loadable_variant_checkpoints(tmp_path: Path) -> None:
    """From scratch: the builder builds the model, and model/ and every checkpoint are variants."""
    from tests.training.test_train import make_data

    manifest, tok_dir = make_data(tmp_path, n=4)
    cfg = TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "run"), model=str(tmp_path / "c.json"),
                      tokenizer=str(tok_dir), steps=1, batch_size=2, warmup_steps=0)
    tiny_config(dropout=0.0, attn_dropout=0.0).save(tmp_path / "c.json")
    result = train(cfg, builder=BUILDER)
    assert type(result["model"]) is GatedGIT
    for directory in (tmp_path / "run" / "model", tmp_path / "run" / "checkpoints" / "step-0000001"):
        assert json.loads((directory / "variant.json").read_text())["builder"] == BUILDER
        assert not (directory / "config.json").exists()
        reloaded = git_scratch.load(directory).state_dict()
        for name, tensor in result["model"].state_dict().items():
            torch.testing.assert_close(reloaded[name], tensor, atol=0, rtol=0, msg=name)


def test_train_without_builder_writes_a_variant_naming_none(tmp_path: Path) -> None:
    from tests.training.test_train import make_data

    manifest, tok_dir = make_data(tmp_path, n=4)
    tokenizer = GitTokenizer.from_pretrained(tok_dir)
    model = gated(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                  eos_id=tokenizer.eos_id)
    cfg = TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "run"), steps=1, batch_size=2,
                      warmup_steps=0)
    train(cfg, model=model, tokenizer=tokenizer, processor=ImageProcessor(size=32, crop_size=32),
          official_layout=False)
    assert json.loads((tmp_path / "run" / "model" / "variant.json").read_text())["builder"] is None
    with pytest.raises(ValueError, match="names no builder"):
        git_scratch.load(tmp_path / "run" / "model")
