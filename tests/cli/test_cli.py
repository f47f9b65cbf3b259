"""The command line, run in-process through `main([...])`, plus one run of the installed script.

The checkpoints are tiny random transformers models in the official layout, with a word-level
tokenizer whose ids fit their vocabulary and whose [CLS]/[SEP]/[PAD] are the models' bos/eos/pad.
Expected outputs come from the library called directly (GIT.generate + decode_answer), so the
tests check that the CLI's pipeline is the model's, whatever the random weights say.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from git_scratch import GIT, GitConfig
from git_scratch.cli import caption as cli_caption
from git_scratch.cli import main
from git_scratch.data.processor import ImageProcessor, load_image
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.data.video import load_video_frames, preprocess_video
from tests.conftest import hf_tiny, save_hf

WORDS = [f"w{i}" for i in range(95)]  # ids 4..98: the word-level specials take 0-3, vocab_size is 99
SPECIAL_IDS = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)  # word_level's [PAD], [CLS], [SEP]


def make_checkpoint(path: Path, **overrides) -> Path:
    torch.manual_seed(0)
    save_hf(hf_tiny(**SPECIAL_IDS, **overrides), path)
    GitTokenizer.word_level(WORDS).save_pretrained(path)
    ImageProcessor(size=32, crop_size=32).save_pretrained(path)
    return path


def write_video(path: Path, n_frames: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(n_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    out = {"image_ckpt": make_checkpoint(root / "image-ckpt"),
           "video_ckpt": make_checkpoint(root / "video-ckpt", num_image_with_embedding=2)}
    for name, size in (("a.jpg", (40, 56)), ("b.png", (33, 30)), ("c.jpg", (64, 48))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)
        out[name] = root / name
    out["clip.mp4"] = write_video(root / "clip.mp4")
    (root / "notes.txt").write_text("not an image\n")
    out["notes.txt"] = root / "notes.txt"
    data = out["clip.mp4"].read_bytes()
    (root / "broken.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    out["broken.mp4"] = root / "broken.mp4"
    data = out["c.jpg"].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])  # the header sniffs fine, decoding fails
    out["truncated.jpg"] = root / "truncated.jpg"
    return out


# Short captions keep the tests fast.
SHORT = ["--max-new-tokens", "6"]


def expected_caption(ckpt: Path, file: Path, max_new_tokens: int = 6) -> str:
    """The library called directly, one file at a time."""
    model = GIT.from_pretrained(ckpt)
    tokenizer = GitTokenizer.from_pretrained(ckpt)
    processor = ImageProcessor.from_pretrained(ckpt)
    if file.suffix == ".mp4":
        pixel_values = preprocess_video(load_video_frames(file, model.cfg.n_frames), processor)[None]
    else:
        pixel_values = processor([load_image(file)])
    ids = model.generate(pixel_values, max_new_tokens=max_new_tokens)
    return tokenizer.decode_answer(ids[0], tokenizer.prompt_ids())


def error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("git-scratch: error: ") for line in lines), err
    return lines


def test_caption_equals_the_library_and_keeps_input_order(files: dict[str, Path], capsys) -> None:
    ckpt = files["image_ckpt"]
    images = [files["c.jpg"], files["a.jpg"], files["b.png"]]
    # batch size 2: one full batch and one of a single image, each checked against a lone call
    assert main(["caption", str(ckpt), *map(str, images), "--batch-size", "2", *SHORT]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [[str(f), expected_caption(ckpt, f)] for f in images]
    assert any(caption for _, caption in rows)  # random weights, but not all empty: a real check


def test_caption_video_model_json(files: dict[str, Path], capsys) -> None:
    """A video model captions a video from cfg.n_frames frames, and an image as a plain image."""
    ckpt = files["video_ckpt"]
    inputs = [files["clip.mp4"], files["a.jpg"]]
    assert main(["caption", str(ckpt), *map(str, inputs), "--json", "--max-new-tokens", "7"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records == [{"file": str(f), "caption": expected_caption(ckpt, f, 7)} for f in inputs]


def test_bad_files_are_reported_and_the_rest_captioned(files: dict[str, Path], capsys) -> None:
    missing = files["a.jpg"].with_name("missing.jpg")
    inputs = [files["a.jpg"], missing, files["notes.txt"], files["broken.mp4"], files["truncated.jpg"],
              files["clip.mp4"], files["b.png"]]
    code = main(["caption", str(files["image_ckpt"]), *map(str, inputs), *SHORT])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(files["a.jpg"]), str(files["b.png"])]
    lines = error_lines(err)
    bad = [missing, files["notes.txt"], files["broken.mp4"], files["truncated.jpg"], files["clip.mp4"]]
    assert len(lines) == len(bad)
    for line, file in zip(lines, bad):  # in input order, each naming its file
        assert str(file) in line
    assert "image model" in lines[-1]  # a video given to an image model


@pytest.mark.parametrize("command", ["caption", "vqa"])
def test_unknown_model_directory(files: dict[str, Path], tmp_path: Path, capsys, command: str) -> None:
    extra = ["-q", "what"] if command == "vqa" else []
    assert main([command, str(tmp_path / "nope"), str(files["a.jpg"]), *extra]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "no such checkpoint directory" in lines[0]


def test_hub_id_offline_or_without_huggingface_hub(files: dict[str, Path], monkeypatch, capsys) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert main(["caption", "nobody/no-such-git", str(files["a.jpg"])]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "nobody/no-such-git is not a local directory and could not be downloaded" in lines[0]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    assert main(["info", "nobody/no-such-git"]) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1


def test_vqa_encodes_the_image_once(files: dict[str, Path], monkeypatch, capsys) -> None:
    ckpt = files["image_ckpt"]
    model = GIT.from_pretrained(ckpt)
    monkeypatch.setattr(GIT, "from_pretrained", classmethod(lambda cls, *a, **kw: model))
    calls = []
    model.vision.register_forward_hook(lambda *_: calls.append(1))
    questions = ["w5 w6 w7", "w8", "what is w9 ?"]  # different lengths: left padding; "what" is [UNK]
    assert main(["vqa", str(ckpt), str(files["a.jpg"]), *(f"--question={q}" for q in questions),
                 *SHORT, "--json"]) == 0
    assert len(calls) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tokenizer = GitTokenizer.from_pretrained(ckpt)
    pixel_values = ImageProcessor.from_pretrained(ckpt)([load_image(files["a.jpg"])])
    for record, question in zip(records, questions, strict=True):
        ids = model.generate(pixel_values, torch.tensor([tokenizer.prompt_ids(question)]), max_new_tokens=6)
        answer = tokenizer.decode_answer(ids[0], tokenizer.prompt_ids(question))
        assert record == {"file": str(files["a.jpg"]), "question": question, "answer": answer}


def test_vqa_overlong_question_is_one_line(files: dict[str, Path], capsys) -> None:
    question = " ".join(WORDS[:70])  # 71 tokens with [CLS]; the tiny model has 64 text positions
    code = main(["vqa", str(files["image_ckpt"]), str(files["a.jpg"]), "-q", "w1", "-q", question])
    assert code == 2
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert out == "" and len(lines) == 1
    assert "question 'w0 w1 w2 w3" in lines[0] and "64 text positions" in lines[0]
    assert main(["caption", str(files["image_ckpt"]), str(files["a.jpg"]), "--max-new-tokens", "64"]) == 2
    assert "use at most 63" in error_lines(capsys.readouterr().err)[0]


def test_cuda_requested_without_cuda(files: dict[str, Path], capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["caption", str(files["image_ckpt"]), str(files["a.jpg"]), "--device", "cuda"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "CUDA is not available" in lines[0]


@pytest.mark.parametrize("verbose", [["--verbose"], []])
def test_bf16_beams_and_verbose(files: dict[str, Path], capsys, caplog, verbose: list[str]) -> None:
    assert main([*verbose, "caption", str(files["image_ckpt"]), str(files["a.jpg"]), "--dtype", "bf16",
                 "--num-beams", "2", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"{files['a.jpg']}\t")
    assert ("loaded" in caplog.text) == bool(verbose)
    assert main(["info", "git-base", "-v"]) == 0  # --verbose after the subcommand parses too


def test_convert_refuses_then_forces_and_transformers_loads_it(files: dict[str, Path], tmp_path: Path,
                                                               capsys) -> None:
    transformers = pytest.importorskip("transformers")
    src = tmp_path / "bin-ckpt"  # the pytorch_model.bin layout, converted to safetensors
    torch.manual_seed(1)
    hf = hf_tiny(**SPECIAL_IDS)
    hf.save_pretrained(src, safe_serialization=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copyfile(files["image_ckpt"] / name, src / name)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep me")
    capsys.readouterr()  # transformers' progress bars
    assert main(["convert", str(src), str(dst)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--force" in lines[0]
    assert [p.name for p in dst.iterdir()] == ["mine.txt"]

    assert main(["convert", str(src), str(dst), "--force"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
         "generation_config.json"])
    assert not list(tmp_path.glob(".out*"))  # no temporary directory left behind
    reloaded = transformers.GitForCausalLM.from_pretrained(dst)
    expected = hf.state_dict()
    for key, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)
    capsys.readouterr()
    assert main(["caption", str(dst), str(files["a.jpg"]), *SHORT]) == 0  # usable as it is
    assert capsys.readouterr().out == f"{files['a.jpg']}\t{expected_caption(src, files['a.jpg'])}\n"


def test_info_preset_and_checkpoint(files: dict[str, Path], capsys) -> None:
    assert main(["info", "git-base"]) == 0
    out = capsys.readouterr().out
    with torch.device("meta"):
        total = sum(p.numel() for p in GIT(GitConfig.from_name("git-base")).parameters())
    assert any(line.split()[:2] == ["total", f"{total:,}"] for line in out.splitlines())

    transformers = pytest.importorskip("transformers")
    assert main(["info", str(files["video_ckpt"])]) == 0
    out = capsys.readouterr().out
    hf_total = transformers.GitForCausalLM.from_pretrained(files["video_ckpt"]).num_parameters()
    capsys.readouterr()  # transformers' progress bar
    assert any(line.split()[:2] == ["total", f"{hf_total:,}"] for line in out.splitlines())
    assert "2 frames" in out

    assert main(["info", "git-nonexistent"]) == 2
    assert "preset" in error_lines(capsys.readouterr().err)[0]


def test_interrupt_exits_130(files: dict[str, Path], monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_caption, "sniff_media", interrupted)
    assert main(["caption", str(files["image_ckpt"]), str(files["a.jpg"])]) == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports torch: most of this file's run time
def test_console_script_end_to_end(files: dict[str, Path]) -> None:
    script = Path(sys.executable).with_name("git-scratch")
    if not script.exists():
        pytest.skip("the git-scratch console script is not installed in this environment")
    missing = files["a.jpg"].with_name("gone.png")
    run = subprocess.run([str(script), "caption", str(files["image_ckpt"]), str(files["a.jpg"]), str(missing),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert [json.loads(line)["file"] for line in run.stdout.splitlines()] == [str(files["a.jpg"])]
    assert run.stderr.strip().splitlines() == [f"git-scratch: error: media file {missing} not found"]


@pytest.mark.parametrize(("command", "backend", "task"), [("caption", "pil", "caption"), ("caption", "original", "caption"),
                                                          ("vqa", "original", "vqa")])
def test_backend_flag_reaches_the_model(files: dict[str, Path], monkeypatch, capsys, command: str, backend: str,
                                        task: str) -> None:
    """--backend preprocesses with that backend's pipeline (for vqa, the original's no-crop one):
    the pixels the model sees equal the library's processor built the same way."""
    ckpt = files["image_ckpt"]
    model = GIT.from_pretrained(ckpt)
    monkeypatch.setattr(GIT, "from_pretrained", classmethod(lambda cls, *a, **kw: model))
    seen = []
    model.vision.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    extra = ["-q", "w5"] if command == "vqa" else []
    assert main([command, str(ckpt), str(files["c.jpg"]), *extra, *SHORT, "--backend", backend]) == 0
    processor = ImageProcessor.from_pretrained(ckpt).for_backend(backend, task)
    expected = processor.preprocess(processor.load(files["c.jpg"]))[None]
    default = ImageProcessor.from_pretrained(ckpt)([load_image(files["c.jpg"])])
    assert torch.equal(seen[0], expected)
    assert seen[0].shape != default.shape or not torch.equal(seen[0], default)  # the flag changed something


def test_semantics_and_length_penalty_flags_reach_generate(files: dict[str, Path], monkeypatch, capsys) -> None:
    """--semantics and --length-penalty are passed to generate as they are: caption's output equals
    the library's with the same keywords (and the flags exist: argparse refused them before)."""
    ckpt = files["image_ckpt"]
    model = GIT.from_pretrained(ckpt)
    monkeypatch.setattr(GIT, "from_pretrained", classmethod(lambda cls, *a, **kw: model))
    seen = []
    original = GIT.generate
    monkeypatch.setattr(GIT, "generate", lambda self, *a, **kw: seen.append(kw) or original(self, *a, **kw))
    assert main(["caption", str(ckpt), str(files["a.jpg"]), *SHORT, "--num-beams", "3",
                 "--semantics", "transformers<4.50", "--length-penalty", "0.6"]) == 0
    assert seen[0] == {"num_beams": 3, "max_new_tokens": 6, "semantics": "transformers<4.50", "length_penalty": 0.6}
    assert main(["caption", str(ckpt), str(files["a.jpg"]), *SHORT, "--semantics", "original"]) == 0
    assert seen[1]["semantics"] == "original"


def test_vqa_original_semantics_asks_questions_of_different_lengths(files: dict[str, Path], capsys) -> None:
    """The original decodes unpadded prompts only: vqa asks each question alone there, and each answer
    equals answer() on that question's original prompt by itself."""
    ckpt = files["image_ckpt"]
    questions = ["w5 w6 w7", "w8"]
    assert main(["vqa", str(ckpt), str(files["a.jpg"]), *(f"--question={q}" for q in questions), *SHORT,
                 "--semantics", "original", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, tokenizer = GIT.from_pretrained(ckpt), GitTokenizer.from_pretrained(ckpt)
    pixel_values = ImageProcessor.from_pretrained(ckpt)([load_image(files["a.jpg"])])
    for record, question in zip(records, questions, strict=True):
        row = model.answer(pixel_values, [tokenizer.original_prompt_ids(question)], max_new_tokens=6,
                           semantics="original")[0]
        assert record["answer"] == tokenizer.decode_answer(row)
