"""The ONNX export: the graphs run by ONNX Runtime give PyTorch's logits at every step and its tokens,
with no torch imported by the runtime; unsupported models and damaged export directories get one line.

Every comparison is against our PyTorch path computed in the test (tests/parity holds that path to
transformers). Two tiny checkpoints are exported once per module: an image model (the default tiny
config, through the `git-scratch export` command) and a video model with tied embeddings and odd
activations (silu decoder, gelu_pytorch_tanh ViT), through `export_onnx`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the export tests need the export extra: pip install -e '.[export]'")
pytest.importorskip("onnxruntime", reason="the export tests need the export extra: pip install -e '.[export]'")
pytest.importorskip("onnxscript", reason="the export tests need the export extra: pip install -e '.[export]'")

from git_scratch.checkpoints.files import load_pretrained
from git_scratch.config import VisionConfig
from git_scratch.export import decode as onnx_decode
from git_scratch.export.decode import load_onnx
from git_scratch.export.onnx import export_onnx
from git_scratch.export.runtime import open_export
from git_scratch.generation import prefix as torch_prefix
from git_scratch.model.decoder import DecoderBlock
from git_scratch.model.git import GIT
from tests.conftest import tiny_config
from tests.hardening.support import run_cli

TOLERANCE = 1e-4  # issue 18: ONNX Runtime logits within 1e-4 of PyTorch fp32 at every step


@pytest.fixture(scope="module")
def image_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[GIT, Path, Path]:
    """(plain PyTorch model, checkpoint dir, export dir) of a tiny image model, exported by the CLI."""
    root = tmp_path_factory.mktemp("image")
    preset = root / "tiny.json"
    tiny_config(vocab_size=200, pad_id=0, bos_id=101, eos_id=102).save(preset)
    assert run_cli("init", "--preset", preset, root / "ckpt", "--seed", "3").code == 0
    run = run_cli("export", root / "ckpt", root / "onnx")
    assert run.code == 0 and run.out.strip() == str(root / "onnx"), run.err
    return load_pretrained(root / "ckpt", fast=False), root / "ckpt", root / "onnx"


@pytest.fixture(scope="module")
def video_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[GIT, Path]:
    """A video model (2 frames) with tied embeddings, a silu decoder and a tanh-GELU ViT."""
    torch.manual_seed(1)
    vision = VisionConfig(image_size=32, patch_size=8, d_model=32, n_layer=2, n_head=4, d_ff=37, act="gelu_pytorch_tanh")
    model = GIT(tiny_config(n_frames=2, tie_embeddings=True, act="silu", vision=vision)).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("video") / "onnx")


def prompts(cfg, rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts of different lengths: row 0 is [bos] alone, row 1 [bos] + 3 tokens."""
    input_ids = torch.tensor([[cfg.pad_id, cfg.pad_id, cfg.pad_id, cfg.bos_id], [cfg.bos_id, 7, 8, 9]])[:rows]
    return input_ids, (input_ids != cfg.pad_id).long()


def test_onnx_checker_passes_on_every_graph(image_export, video_export) -> None:
    for directory in (image_export[2], video_export[1]):
        description = json.loads((directory / "export.json").read_text())
        for graph in description["graphs"].values():
            onnx.checker.check_model(str(directory / graph["file"]), full_check=True)
    assert set(json.loads((video_export[1] / "export.json").read_text())["graphs"]) == {"image", "video", "text_step"}


@pytest.mark.parametrize("which", ["image", "video-tied-silu"])
def test_logits_match_pytorch_at_every_teacher_forced_step(which, image_export, video_export) -> None:
    model, directory = (image_export[0], image_export[2]) if which == "image" else video_export
    cfg = model.cfg
    onnx_model = load_onnx(directory)
    torch.manual_seed(0)
    frames = (cfg.n_frames,) if cfg.n_frames else ()
    pixel_values = torch.randn(2, *frames, 3, 32, 32)
    input_ids, attention_mask = prompts(cfg)
    forced = torch.randint(3, cfg.vocab_size, (2, 6))  # the tokens fed back, whatever either side predicts
    with torch.no_grad():
        ours = torch_prefix.encode_prefix(model, pixel_values)
        theirs = onnx_decode.encode_prefix(onnx_model, pixel_values)
        for a, b in zip(ours.keys + ours.values, theirs.keys + theirs.values):
            torch.testing.assert_close(b, a, atol=TOLERANCE, rtol=0)
        index = torch.arange(2)
        state, logits = torch_prefix.prefill(model, ours, index, input_ids, attention_mask, forced.shape[1])
        onnx_state, onnx_logits = onnx_decode.prefill(onnx_model, theirs, index, input_ids, attention_mask,
                                                      forced.shape[1])
        steps = [(logits, onnx_logits)]
        for step in range(forced.shape[1]):
            token = forced[:, step:step + 1]
            steps.append((torch_prefix.decode_step(model, state, token, 4 + step),
                          onnx_decode.decode_step(onnx_model, onnx_state, token, 4 + step)))
    for step, (expected, actual) in enumerate(steps):
        assert (actual - expected).abs().max() <= TOLERANCE, f"step {step}: {(actual - expected).abs().max()}"


@pytest.mark.parametrize("which", ["image", "video-tied-silu"])
def test_greedy_beam_and_sampled_tokens_identical_row_for_row(which, image_export, video_export) -> None:
    model, directory = (image_export[0], image_export[2]) if which == "image" else video_export
    onnx_model = load_onnx(directory)
    torch.manual_seed(2)
    frames = (model.cfg.n_frames,) if model.cfg.n_frames else ()
    pixel_values = torch.randn(2, *frames, 3, 32, 32)
    input_ids, attention_mask = prompts(model.cfg)
    cases = [{"num_beams": 1}, {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.6},
             {"do_sample": True, "top_k": 20}]
    for kwargs in cases:
        sampled = kwargs.get("do_sample", False)
        expected = model.generate(pixel_values, input_ids, attention_mask, max_new_tokens=8,
                                  generator=torch.Generator().manual_seed(5) if sampled else None, **kwargs)
        actual = onnx_model.generate(pixel_values, input_ids, attention_mask, max_new_tokens=8,
                                     generator=torch.Generator().manual_seed(5) if sampled else None, **kwargs)
        assert torch.equal(actual, expected), kwargs
    # each left-padded row alone gives the tokens it gets in the batch
    alone = onnx_model.generate(pixel_values[:1], input_ids[:1, -1:], max_new_tokens=8, num_beams=3)
    batched = onnx_model.generate(pixel_values, input_ids, attention_mask, max_new_tokens=8, num_beams=3)
    assert torch.equal(alone[0, 1:], batched[0, 4:4 + alone.shape[1] - 1])
    questions = [[model.cfg.bos_id, 7, 8], [model.cfg.bos_id, 9]]
    assert torch.equal(onnx_model.answer(pixel_values, questions, max_new_tokens=5, num_beams=3),
                       model.answer(pixel_values, questions, max_new_tokens=5, num_beams=3))


def test_runtime_runs_without_torch_in_a_subprocess(image_export, tmp_path: Path) -> None:
    """git_scratch.export.runtime imported as a deployment imports it, with numpy inputs: torch never
    imported (the package's names load lazily), and its prefill logits equal PyTorch's."""
    model, _, directory = image_export
    torch.manual_seed(3)
    pixel_values = torch.randn(1, 3, 32, 32)
    input_ids, attention_mask = prompts(model.cfg, rows=1)
    with torch.no_grad():
        prefix = torch_prefix.encode_prefix(model, pixel_values)
        state, logits = torch_prefix.prefill(model, prefix, torch.zeros(1, dtype=torch.long), input_ids,
                                             attention_mask, 1)
    n = prefix.n_tokens
    mask = state.mask[:, :, n:n + 4, :n + 4]  # the prompt's queries over the image and the prompt
    np.savez(tmp_path / "inputs.npz", pixel_values=pixel_values.numpy(), input_ids=input_ids.numpy(),
             positions=state.positions[:, :4].numpy(), mask=mask.numpy(), expected=logits.numpy())
    script = f"""
import sys
import numpy as np
from git_scratch.export import runtime
data = np.load({str(tmp_path / "inputs.npz")!r})
exported = runtime.open_export({str(directory)!r})
cache = exported.encode_image(data["pixel_values"])
logits, cache = exported.text_step(data["input_ids"], data["positions"], data["mask"], cache)
assert cache[0].shape[2] == {n + 4}, cache[0].shape
print(float(np.abs(logits[:, -1] - data["expected"]).max()))
assert "torch" not in sys.modules, "torch was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) <= TOLERANCE


class PreLNBlock(DecoderBlock):
    def forward(self, x, mask, cache=None, input_pos=None, positions=None):
        x = x + self.attn(self.norm1(x), mask, cache, input_pos, positions)
        return x + self.mlp(self.norm2(x))


class OtherMask(GIT):
    pass


def test_a_model_the_graphs_cannot_express_gets_one_line_naming_it(tmp_path: Path) -> None:
    model = GIT(tiny_config()).eval()
    model.blocks[1] = PreLNBlock(model.cfg)
    with pytest.raises(ValueError, match=r"^model\.blocks\.1 is a PreLNBlock, not DecoderBlock; ") as error:
        export_onnx(model, tmp_path / "out")
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"^the model is a OtherMask, not GIT; "):
        export_onnx(OtherMask(tiny_config()), tmp_path / "out")


def copy_export(directory: Path, to: Path) -> Path:
    to.mkdir()
    for file in directory.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def test_a_damaged_export_directory_gets_one_line_naming_the_file(image_export, tmp_path: Path) -> None:
    directory = image_export[2]
    missing = copy_export(directory, tmp_path / "missing")
    (missing / "text_step.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"text_step\.onnx is missing"):
        open_export(missing)
    opset = copy_export(directory, tmp_path / "opset")
    graph = onnx.load(str(opset / "image.onnx"))
    next(entry for entry in graph.opset_import if entry.domain == "").version = 17
    onnx.save(graph, str(opset / "image.onnx"))
    with pytest.raises(ValueError, match=r"image\.onnx has opset 17 but .*export\.json says 18"):
        open_export(opset)
    edited = copy_export(directory, tmp_path / "edited")
    description = json.loads((edited / "export.json").read_text())
    description["graphs"]["text_step"]["outputs"][0]["shape"][2] = 30522  # someone "fixed" the vocab
    (edited / "export.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"text_step\.onnx's outputs differ from those .*export\.json describes"):
        open_export(edited)
    (edited / "export.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"export\.json is not valid JSON"):
        open_export(edited)
    del description["opset"]
    (edited / "export.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"export\.json lacks opset"):
        open_export(edited)
    run = run_cli("caption", "--runtime", "onnxruntime", missing, "x.png")
    assert run.code == 2 and run.err.count("\n") == 1 and "text_step.onnx is missing" in run.err, run.err


def test_export_refuses_to_overwrite_without_force(image_export) -> None:
    _, checkpoint, directory = image_export
    before = (directory / "export.json").read_text()
    run = run_cli("export", checkpoint, directory)
    assert run.code == 2 and "already exists; pass --force" in run.err and run.err.count("\n") == 1, run.err
    assert (directory / "export.json").read_text() == before


def test_caption_and_vqa_with_onnxruntime_print_the_torch_lines(image_export, tmp_path: Path) -> None:
    from PIL import Image

    _, checkpoint, directory = image_export
    images = []
    for seed in range(2):
        images.append(tmp_path / f"{seed}.png")
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(images[-1])
    for command in (["caption", *images, "--num-beams", "3"], ["vqa", images[0], "-q", "what is it?", "-q", "why?"]):
        flags = command[1:]
        torch_run = run_cli(command[0], checkpoint, *flags, "--max-new-tokens", "5")
        onnx_run = run_cli(command[0], "--runtime", "onnxruntime", directory, *flags, "--max-new-tokens", "5")
        assert torch_run.code == onnx_run.code == 0, onnx_run.err
        assert onnx_run.out == torch_run.out.replace(str(checkpoint), str(directory)) and onnx_run.out


def test_fp16_export_runs_and_stays_near_fp32(image_export, tmp_path: Path) -> None:
    model = image_export[0]
    directory = export_onnx(model, tmp_path / "fp16", dtype="fp16")
    assert model.lm_head.weight.dtype == torch.float32  # the caller's model is left as it was
    weights = onnx.load(str(directory / "text_step.onnx")).graph.initializer
    large = {w.data_type for w in weights if np.prod(w.dims) >= 64}  # the layers' matrices, not shape constants
    assert large == {onnx.TensorProto.FLOAT16}
    onnx_model = load_onnx(directory)
    torch.manual_seed(4)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = torch_prefix.prefill(model, torch_prefix.encode_prefix(model, pixel_values), torch.zeros(1, dtype=torch.long),
                                        *prompts(model.cfg, rows=1), 1)[1]
    actual = onnx_decode.prefill(onnx_model, onnx_decode.encode_prefix(onnx_model, pixel_values),
                                 torch.zeros(1, dtype=torch.long), *prompts(model.cfg, rows=1), 1)[1]
    assert actual.dtype == torch.float32 and (actual - expected).abs().max() < 0.05


def test_bad_export_flags_get_one_line(image_export, tmp_path: Path) -> None:
    run = run_cli("export", image_export[1], tmp_path / "out", "--opset", "17")
    assert run.code == 2 and run.err.count("\n") == 1 and "opset = 17" in run.err, run.err
    assert not (tmp_path / "out").exists()


def test_a_model_changed_by_accel_precision_is_refused_in_one_line(tmp_path: Path) -> None:
    """restore would hand the exporter bf16-rounded fp32 weights and leave the caller's model changed."""
    from git_scratch import accel

    model = accel.optimize(GIT(tiny_config()).eval(), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"went through accel.optimize .*bfloat16.*export the checkpoint as loaded"):
        export_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert model.lm_head.weight.dtype == torch.bfloat16  # the caller's model untouched
