"""The worked examples of docs/extending.md: scripts/extend_{rotary,preln,tower}.py.

Each variant must keep what generation relies on (cached decoding, with the image prefix
computed alone, equals the full forward pass), each script must train and evaluate end to end
in a shortened run with the variant really in the trained model, and a changed model must
never be saved in the official layout as if it were GIT.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from git_scratch import GIT
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.generation.prefix import decode_step, encode_prefix, prefill
from git_scratch.training.loop import TrainConfig, train
from tests.conftest import tiny_config

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rotary, preln, tower = (load_script(n) for n in ("extend_rotary", "extend_preln", "extend_tower"))


def tiny_variant(script: ModuleType, dtype: torch.dtype = torch.float32) -> GIT:
    torch.manual_seed(0)
    return script.customize(GIT.from_config(tiny_config(init_std=0.2))).eval().to(dtype)


@pytest.mark.parametrize("script", [rotary, preln, tower], ids=["rotary", "preln", "tower"])
def test_cached_steps_equal_full_forward(script: ModuleType) -> None:
    """Prefill + one-token cached steps give the full forward pass's logits, a left-padded row
    included: rotary keys enter the cache rotated, pre-LN caches keys of norm1(x)
    (PreLNBlock.keys_values), the tower's tokens go through the same prefix."""
    model = tiny_variant(script, torch.float64)
    pixel_values = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    input_ids = torch.randint(3, 99, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    with torch.no_grad():
        full = model(pixel_values, input_ids, attention_mask)  # (2, 9, V)
        state, logits = prefill(model, encode_prefix(model, pixel_values), torch.arange(2),
                                input_ids[:, :4], attention_mask[:, :4], 5)
        steps = [logits] + [decode_step(model, state, input_ids[:, t:t + 1], t) for t in range(4, 8)]
    for i, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, 3 + i].float(), atol=1e-6, rtol=0)


def test_rotary_replaces_the_position_table_and_padding_or_packing_change_nothing() -> None:
    model = tiny_variant(rotary)
    assert all(isinstance(b.attn, rotary.RotaryAttention) for b in model.blocks)
    assert "embed.position.weight" not in model.state_dict()
    pixel_values = torch.randn(1, 3, 32, 32)
    ids, other = torch.randint(3, 99, (1, 6)), torch.randint(3, 99, (1, 3))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    packed = torch.cat([ids, other], dim=1)
    segments = torch.tensor([[1] * 6 + [2] * 3])
    with torch.no_grad():
        alone = model(pixel_values, ids)
        shifted = model(pixel_values, padded, (padded != 0).long())[:, 3:]
        together = model(pixel_values, packed, segment_ids=segments)
        swapped = model(pixel_values, ids[:, [0, 2, 1, 3, 4, 5]])
    # Positions count real tokens only and restart with each packed text, as in GIT.
    torch.testing.assert_close(shifted, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[:, :6], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[:, 6:], model(pixel_values, other), atol=1e-5, rtol=0)
    # Order matters without a position table: rotary is in the attention.
    assert not torch.allclose(swapped[:, 3:], alone[:, 3:], atol=1e-3)


def test_preln_blocks_and_final_norm_are_in_the_model() -> None:
    model = tiny_variant(preln)
    assert all(isinstance(b, preln.PreLNBlock) for b in model.blocks)
    assert isinstance(model.final_norm, nn.LayerNorm)


def test_tower_tokens_start_with_open_clips_pooled_vector() -> None:
    model = tiny_variant(tower)
    pixel_values = torch.randn(2, 3, 32, 32)
    r = model.vision.resnet
    with torch.no_grad():
        tokens = model.vision(pixel_values)
        pooled = r.attnpool(r.layer4(r.layer3(r.layer2(r.layer1(r.stem(pixel_values))))))
    assert tokens.shape == (2, 1 + 1, model.cfg.vision.d_model)  # 32 px: a 1 x 1 map, plus the pooled token
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-5, rtol=0)


def test_a_changed_model_is_refused_by_the_official_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no place for final_norm\.bias, final_norm\.weight\).*save_variant") as e:
        tiny_variant(preln).save_pretrained(tmp_path / "preln")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"lacks embed\.position\.weight"):
        tiny_variant(rotary).save_pretrained(tmp_path / "rotary")
    assert not (tmp_path / "preln").exists() and not (tmp_path / "rotary").exists()


def test_training_refuses_a_changed_model_before_the_first_step(tmp_path: Path) -> None:
    cfg = TrainConfig(train_manifest=str(tmp_path / "absent.jsonl"), out_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"builder="):  # not the missing manifest: that comes later
        train(cfg, model=tiny_variant(tower), tokenizer=GitTokenizer.word_level(["a"]),
              processor=ImageProcessor(size=32, crop_size=32))


@pytest.mark.parametrize(("script", "key"), [(rotary, "blocks.0.attn.qkv.weight"), (preln, "final_norm.weight"),
                                             (tower, "vision.resnet.attnpool.c_proj.weight")],
                         ids=["rotary", "preln", "tower"])
def test_script_trains_and_evaluates_the_variant(script: ModuleType, key: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The script end to end, shortened: 1 step on 32 training images, 2 held-out images; the
    trained model is a variant directory naming the script's rebuild, which loads it back."""
    monkeypatch.syspath_prepend(str(SCRIPTS))  # where running the script finds its builder, and the CLI with PYTHONPATH
    out = tmp_path / "run"
    assert script.main(["--steps", "1", "--train-images", "32", "--eval-images", "2",
                        "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["customized"] and result["train_steps"] == 1 and result["n_heldout_captions"] == 2
    assert 0 <= result["caption_exact_match"] <= 1 and 0 <= result["vqa_accuracy"] <= 1
    model_dir = Path(result["model_dir"])
    assert json.loads((model_dir / "variant.json").read_text())["builder"] == script.BUILDER
    state = GIT.from_pretrained(model_dir).state_dict()
    assert key in state and "embed.position.weight" not in (state if script is rotary else {})
    assert not (model_dir / "config.json").exists()


def test_a_changed_model_resumes_exactly_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train(official_layout=False), no builder: checkpoints are variants naming none, and a run
    killed after its step-2 checkpoint and resumed ends with the uninterrupted run's parameters."""
    import git_scratch.training.loop as train_module
    from tests.training.test_train import make_data, params, small_model

    manifest, tok_dir = make_data(tmp_path)
    tokenizer = GitTokenizer.from_pretrained(tok_dir)

    def run(out: str, **changes: object) -> dict:
        cfg = TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / out), steps=4, batch_size=4,
                          lr=3e-3, warmup_steps=2, save_every=2, **changes)
        return train(cfg, model=preln.customize(small_model(tokenizer)), tokenizer=tokenizer,
                     processor=ImageProcessor(size=32, crop_size=32), official_layout=False)

    full = run("full")
    save = train_module.save_checkpoint

    def save_then_die(out_dir, step, *args):
        save(out_dir, step, *args)
        raise KeyboardInterrupt("killed after the step-2 checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run("cut")
    saved = {p.name for p in (tmp_path / "cut" / "checkpoints" / "step-0000002").iterdir()}
    assert {"variant.json", "model.safetensors", "trainer_state.pt", "tokenizer.json"} <= saved
    assert "config.json" not in saved
    resumed = run("cut", resume=True)
    a, b = params(full["model"]), params(resumed["model"])
    assert "final_norm.weight" in b
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)
