"""Training: exact resume, DDP equivalence, checkpoint safety, and that it actually learns."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from git_scratch import GIT
from git_scratch.data.manifest import ManifestDataset, collate, read_manifest
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.training.loop import TrainConfig, latest_checkpoint, lr_factor, param_groups, train
from tests.conftest import tiny_config

WORDS = ["a", "red", "blue", "green", "circle", "square", "what", "color", "is", "the", "?"]


def make_data(root: Path, n: int = 16) -> tuple[Path, Path]:
    """n tiny images with captions and questions, a word-level tokenizer, and its directory."""
    lines = []
    for i in range(n):
        colour, shape = ["red", "blue", "green"][i % 3], ["circle", "square"][i % 2]
        rgb = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}[colour]
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        box = (4 + i % 5, 6, 22 + i % 5, 24)
        (ImageDraw.Draw(image).ellipse if shape == "circle" else ImageDraw.Draw(image).rectangle)(box, fill=rgb)
        image.save(root / f"{i}.png")
        lines.append({"image": f"{i}.png", "caption": f"a {colour} {shape}"})
        lines.append({"image": f"{i}.png", "question": "what color is the circle?", "answer": colour})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tok_dir = root / "tok"
    GitTokenizer.word_level(WORDS).save_pretrained(tok_dir)
    return manifest, tok_dir


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_data(tmp_path)


def small_model(tokenizer: GitTokenizer, **overrides) -> GIT:
    torch.manual_seed(0)
    settings = dict(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                    eos_id=tokenizer.eos_id, init_std=0.02, dropout=0.0, attn_dropout=0.0)
    cfg = tiny_config(**{**settings, **overrides})
    return GIT.from_config(cfg)


def run(data, out: Path, allow_changes: bool = False, **changes):
    manifest, tok_dir = data
    tokenizer = GitTokenizer.from_pretrained(tok_dir)
    settings = dict(train_manifest=str(manifest), out_dir=str(out), steps=6, batch_size=4, lr=3e-3,
                    warmup_steps=2, seed=0)
    cfg = TrainConfig(**{**settings, **changes})
    return train(cfg, model=small_model(tokenizer, dropout=0.1, attn_dropout=0.1), tokenizer=tokenizer,
                 processor=ImageProcessor(size=32, crop_size=32), allow_changes=allow_changes)


def params(model: GIT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_matches_uninterrupted_run(data, tmp_path: Path, monkeypatch) -> None:
    full = run(data, tmp_path / "full", save_every=3)
    import git_scratch.training.loop as train_module

    save = train_module.save_checkpoint

    def save_then_die(out_dir, step, *args):
        save(out_dir, step, *args)
        raise KeyboardInterrupt("killed after the step-3 checkpoint")
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run(data, tmp_path / "cut", save_every=3)
    resumed = run(data, tmp_path / "cut", save_every=3, resume=True)
    a, b = params(full["model"]), params(resumed["model"])
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)
    assert resumed["final_loss"] == full["final_loss"]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_final_model_loads_in_transformers(data, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    result = run(data, tmp_path / "run")
    hf = transformers.GitForCausalLM.from_pretrained(result["model_dir"]).eval()
    ours = GIT.from_pretrained(result["model_dir"])
    pixel_values, input_ids = torch.randn(1, 3, 32, 32), torch.tensor([[2, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(ours(pixel_values, input_ids), hf(pixel_values=pixel_values, input_ids=input_ids).logits[:, -3:],
                                   atol=1e-5, rtol=0)
    assert (Path(result["model_dir"]) / "tokenizer.json").is_file()
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_keep_last_and_failed_save_keeps_previous(data, tmp_path: Path, monkeypatch) -> None:
    run(data, tmp_path / "run", save_every=2, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-0000004", "step-0000006"]
    previous = latest_checkpoint(tmp_path / "run")
    before = (previous / "model.safetensors").read_bytes()

    import git_scratch.training.loop as train_module

    def explode(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(train_module, "write_model_files", explode)
    with pytest.raises(OSError, match="disk full"):
        run(data, tmp_path / "run", steps=8, resume=True, allow_changes=True)  # 6 -> 8 steps is a change
    assert latest_checkpoint(tmp_path / "run") == previous
    assert (previous / "model.safetensors").read_bytes() == before
    GIT.from_pretrained(previous)  # still loadable
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_one_step_equals_hand_written_adamw(data) -> None:
    """Our step = the textbook AdamW update with our loss, decay only on weight matrices."""
    manifest, tok_dir = data
    tokenizer = GitTokenizer.from_pretrained(tok_dir)
    model = small_model(tokenizer)
    ref = small_model(tokenizer)
    dataset = ManifestDataset(read_manifest(manifest), ImageProcessor(size=32, crop_size=32), tokenizer, pack=True)
    batch = collate([dataset[i] for i in range(4)], tokenizer.pad_id)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, warmup_steps=1, steps=10)
    opt = torch.optim.AdamW(param_groups(model, cfg), betas=cfg.betas)
    from git_scratch import git_loss

    git_loss(model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], segment_ids=batch["segment_ids"]),
             batch["labels"]).backward()
    opt.step()
    # reference: one Adam step from zero moments is p - lr * g / (|g| + eps) (bias-corrected), plus decay
    git_loss(ref(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], segment_ids=batch["segment_ids"]),
             batch["labels"]).backward()
    matrices = {id(m.weight) for m in ref.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    matrices |= {id(m.in_proj_weight) for m in ref.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    with torch.no_grad():
        for (name, p), q in zip(ref.named_parameters(), model.parameters()):
            decay = 0.1 if id(p) in matrices else 0.0
            expected = p * (1 - 1e-2 * decay) - 1e-2 * p.grad / (p.grad.abs() + 1e-8)
            torch.testing.assert_close(q, expected, atol=1e-6, rtol=1e-5, msg=name)
    assert lr_factor(0, TrainConfig(warmup_steps=4, steps=10)) == 0.25


def test_overfits_a_batch_of_eight(data) -> None:
    manifest, tok_dir = data
    tokenizer = GitTokenizer.from_pretrained(tok_dir)
    model = small_model(tokenizer).train()
    dataset = ManifestDataset(read_manifest(manifest), ImageProcessor(size=32, crop_size=32), tokenizer, pack=True)
    batch = collate([dataset[i] for i in range(8)], tokenizer.pad_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    from git_scratch import git_loss

    for _ in range(150):
        loss = git_loss(model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                              segment_ids=batch["segment_ids"]), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_bad_examples_are_skipped_and_mostly_bad_manifest_refused(tmp_path: Path, caplog) -> None:
    manifest, _ = make_data(tmp_path)
    lines = manifest.read_text().splitlines()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    extra = ['{"image": "missing.png", "caption": "a red circle"}', "not json",
             '{"image": "broken.png", "caption": "a red circle"}']
    manifest.write_text("\n".join(lines + extra) + "\n")
    examples = read_manifest(manifest)
    assert len(examples) == len(lines) + 1  # the broken PNG is only found when read
    assert "missing.png not found" in caplog.text and f"{manifest}:{len(lines) + 2}: not JSON" in caplog.text
    dataset = ManifestDataset(examples, ImageProcessor(size=32, crop_size=32), GitTokenizer.word_level(WORDS))
    assert dataset[len(examples) - 1] is None and "broken.png" in caplog.text
    manifest.write_text("\n".join(extra * 5 + lines[:2]) + "\n")
    with pytest.raises(ValueError, match="of 17 lines are bad"):
        read_manifest(manifest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_equal_one(data, tmp_path: Path) -> None:
    """torchrun-style 2 ranks with batch 2 = 1 process with batch 4 (same global batches)."""
    manifest, tok_dir = data
    script = tmp_path / "worker.py"
    script.write_text(f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.training.test_train import small_model
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.data.processor import ImageProcessor
from git_scratch.training.loop import TrainConfig, train
torch.set_num_threads(1)
tok = GitTokenizer.from_pretrained({str(tok_dir)!r})
out, batch = sys.argv[1], int(sys.argv[2])
cfg = TrainConfig(train_manifest={str(manifest)!r}, out_dir=out, steps=4, batch_size=batch, lr=3e-3, warmup_steps=2)
train(cfg, model=small_model(tok), tokenizer=tok, processor=ImageProcessor(size=32, crop_size=32))
""")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "ddp"), "2"],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in ranks)
    single = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "4"], env=single, check=True, timeout=300)
    a = GIT.from_pretrained(tmp_path / "ddp" / "model").state_dict()
    b = GIT.from_pretrained(tmp_path / "one" / "model").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--steps", "-1"), ("--lr", "0")])
def test_bad_training_settings_are_one_line(data, flag: str, value: str, capsys) -> None:
    from git_scratch.cli import main

    manifest, _ = data
    assert main(["train", "--train-manifest", str(manifest), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and value in err
