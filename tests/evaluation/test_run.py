"""evaluation/run.py: predictions at scale equal training/evaluate.py's `predict`, item by item;
2 gloo processes give what 1 process gives; a killed run resumes without redoing finished shards;
a resume with other settings refuses in one line."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from git_scratch import GIT
from git_scratch.data.manifest import Example, ManifestDataset
from git_scratch.data.processor import ImageProcessor
from git_scratch.data.tokenizer import GitTokenizer
from git_scratch.evaluation import metrics, run
from git_scratch.evaluation.datasets import EvalItem
from git_scratch.training.evaluate import predict
from tests.conftest import tiny_config

WORDS = [f"w{i}" for i in range(95)]  # word_level: specials take ids 0-3, vocab_size 99
PAD, BOS, EOS = 0, 2, 3
GENERATE = {"max_new_tokens": 4}


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(pad_id=PAD, bos_id=BOS, eos_id=EOS, init_std=0.5))
    model.save_pretrained(path)
    GitTokenizer.word_level(WORDS).save_pretrained(path)
    ImageProcessor(size=32, crop_size=32).save_pretrained(path)
    return path


def load(path: Path) -> tuple[GIT, ImageProcessor, GitTokenizer]:
    return GIT.from_pretrained(path).eval(), ImageProcessor.from_pretrained(path), GitTokenizer.from_pretrained(path)


def make_items(root: Path, n_images: int = 5) -> list[EvalItem]:
    """A caption and 0-2 questions of different lengths per image: batches mix captions, questions
    and several questions about one image, and left-pad prompts of 1 to 6 tokens."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n_images):
        image = root / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)).save(image)
        items.append(EvalItem(key=f"{i:03d}-c", media=image, is_video=False, prompt=None, references=("w5 w6",)))
        for q in range(i % 3):
            question = " ".join(WORDS[4 + (i + q + j) % 90] for j in range(1 + 2 * q + i % 2)) + " ?"
            items.append(EvalItem(key=f"{i:03d}-q{q}", media=image, is_video=False, prompt=question,
                                  references=("w7",) * 10, image_id=i))
    return items


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[EvalItem]]:
    root = tmp_path_factory.mktemp("run")
    return make_checkpoint(root / "ckpt"), make_items(root)


def test_predictions_equal_training_predict_and_each_item_alone(setup: tuple[Path, list[EvalItem]]) -> None:
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    got = run.predict_items(model, items, processor, tokenizer, batch_size=4, num_workers=2, **GENERATE)
    # training/evaluate.py's predict on the same examples in the same order: the same batches.
    ordered = sorted(items, key=lambda it: (str(it.media), str(it.key)))
    examples = [Example(n, it.media, False, it.prompt, "x") for n, it in enumerate(ordered, 1)]
    dataset = ManifestDataset(examples, processor, tokenizer)
    expected = dict(zip([it.key for it in ordered], predict(model, dataset, batch_size=4, **GENERATE)))
    # Batch 1: no prompt is padded and no image shared, so left padding provably changes nothing.
    alone = run.predict_items(model, items, processor, tokenizer, batch_size=1, num_workers=0, **GENERATE)
    assert got == expected == alone
    assert len(got) == len(items) and len(set(got.values())) > 1  # a model that says one thing proves nothing


def test_images_of_several_sizes_in_one_batch(setup: tuple[Path, list[EvalItem]], tmp_path: Path) -> None:
    """The original's VQA preprocessing keeps each image's aspect ratio: a batch then holds several
    sizes, each its own prefix and generate call, with what each item gets alone."""
    ckpt, _ = setup
    model, _, tokenizer = load(ckpt)
    processor = ImageProcessor.original(32, task="vqa")
    items = []
    for i, (w, h) in enumerate([(50, 30), (30, 50), (40, 40), (52, 31)]):
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        items += [EvalItem(key=10 * i + q, media=tmp_path / f"{i}.png", is_video=False, prompt=p, references=())
                  for q, p in enumerate([None, "w9 w10 ?"])]
    assert len({processor.preprocess(Image.open(it.media)).shape for it in items}) == 3
    batched = run.predict_items(model, items, processor, tokenizer, batch_size=8, num_workers=0, **GENERATE)
    alone = run.predict_items(model, items, processor, tokenizer, batch_size=1, num_workers=0, **GENERATE)
    assert batched == alone and len(batched) == len(items)


def two_rank_worker(rank: int, port: int, ckpt: Path, items: list[EvalItem], work_dir: Path, out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model, processor, tokenizer = load(ckpt)
    got = run.predict_items(model, items, processor, tokenizer, batch_size=2, shard_size=4, work_dir=work_dir,
                            num_workers=0, **GENERATE)
    (out / f"rank{rank}.json").write_text(json.dumps(list(got.items())))


def test_two_gloo_processes_equal_one(setup: tuple[Path, list[EvalItem]], tmp_path: Path) -> None:
    ckpt, items = setup
    items = items[::-1]  # not in the sorted order the shards are cut in
    model, processor, tokenizer = load(ckpt)
    one = run.predict_items(model, items, processor, tokenizer, batch_size=2, num_workers=0, **GENERATE)
    assert list(one) == [it.key for it in items]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork, not spawn: the children skip importing torch and open_clip again (tens of seconds on a busy CPU)
    mp.start_processes(two_rank_worker, args=(port, ckpt, items, tmp_path / "work", tmp_path), nprocs=2,
                       start_method="fork")
    shards = sorted((tmp_path / "work").glob("shard-*.json"))
    assert len(shards) == -(-len(items) // 4) >= 3  # both ranks had shards to write
    for rank in (0, 1):
        # the same predictions in the same order: the items' own, as result files list them
        assert [tuple(kv) for kv in json.loads((tmp_path / f"rank{rank}.json").read_text())] == list(one.items())


def test_a_killed_run_resumes_without_redoing_finished_shards(setup: tuple[Path, list[EvalItem]], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    kwargs = dict(batch_size=2, shard_size=3, work_dir=tmp_path / "work", num_workers=0, **GENERATE)
    n_shards = -(-len(items) // 3)
    written, batches = [], []
    real_write, real_batch = run.write_shard, run.predict_batch

    def write_then_die(path: Path, *args) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt  # killed while the third shard's batches ran
        written.append(path.name)
        real_write(path, *args)

    def counted_batch(*args):
        batches.append(args[2])
        return real_batch(*args)

    monkeypatch.setattr(run, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run.predict_items(model, items, processor, tokenizer, **kwargs)
    assert sorted(p.name for p in (tmp_path / "work").glob("*")) == written == ["shard-00000.json",
                                                                                 "shard-00001.json"]
    done_keys = {key for shard in written for key, _ in json.loads((tmp_path / "work" / shard).read_text())
                 ["predictions"]}
    monkeypatch.setattr(run, "write_shard", lambda path, *args: (written.append(path.name), real_write(path, *args)))
    monkeypatch.setattr(run, "predict_batch", counted_batch)
    resumed = run.predict_items(model, items, processor, tokenizer, **kwargs)
    assert len(written) - 2 == n_shards - 2  # the shards redone: exactly those not finished
    assert not done_keys & {item.key for batch in batches for item in batch}
    whole = run.predict_items(model, items, processor, tokenizer, **{**kwargs, "work_dir": None})
    assert resumed == whole


def test_a_resume_with_other_settings_or_model_refuses_in_one_line(setup: tuple[Path, list[EvalItem]],
                                                                   tmp_path: Path) -> None:
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    kwargs = {"batch_size": 2, "shard_size": 3, "work_dir": tmp_path / "work", "num_workers": 0}
    run.predict_items(model, items[:4], processor, tokenizer, max_new_tokens=3, **kwargs)
    before = {p: p.read_text() for p in (tmp_path / "work").iterdir()}
    with pytest.raises(ValueError, match=r"shard-00000.json comes from a run with another max_new_tokens;") as e:
        run.predict_items(model, items[:4], processor, tokenizer, max_new_tokens=4, **kwargs)
    assert "\n" not in str(e.value) and "--work-dir" in str(e.value)
    with torch.no_grad():
        model.lm_head.bias[7] += 1  # one weight changed: another model
    with pytest.raises(ValueError, match="another model;"):
        run.predict_items(model, items[:4], processor, tokenizer, max_new_tokens=3, **kwargs)
    with torch.no_grad():
        model.lm_head.bias[7] -= 1
    with pytest.raises(ValueError, match="another keys, items;"):  # 4 items, but other ones
        run.predict_items(model, items[1:5], processor, tokenizer, max_new_tokens=3, **kwargs)
    assert {p: p.read_text() for p in (tmp_path / "work").iterdir()} == before  # nothing mixed in


def test_an_unreadable_image_is_logged_and_left_out(setup: tuple[Path, list[EvalItem]], tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = EvalItem(key="bad", media=broken, is_video=False, prompt=None, references=("w5",))
    with caplog.at_level(logging.WARNING):
        got = run.predict_items(model, [*items[:3], bad], processor, tokenizer, batch_size=4, num_workers=0,
                                **GENERATE)
    assert set(got) == {it.key for it in items[:3]}
    assert any("item 'bad'" in r.getMessage() and "broken.png" in r.getMessage() for r in caplog.records)


def test_bad_inputs_are_one_line_errors(setup: tuple[Path, list[EvalItem]], monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    with pytest.raises(ValueError, match="'000-c' occurs more than once"):
        run.predict_items(model, [items[0], items[0]], processor, tokenizer)
    with pytest.raises(ValueError, match="no items"):
        run.predict_items(model, [], processor, tokenizer)
    video = EvalItem(key=1, media=items[0].media, is_video=True, prompt="w4 ?", references=("w5",))
    with pytest.raises(ValueError, match="image model"):
        run.predict_items(model, [video], processor, tokenizer)
    long = EvalItem(key=2, media=items[0].media, is_video=False, prompt=" ".join(WORDS[:40]), references=("w5",))
    with pytest.raises(ValueError, match=r"item 2: its question is 41 tokens .* lower --max-new-tokens to 23$"):
        run.predict_items(model, [items[0], long], processor, tokenizer, max_new_tokens=24)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="pass --work-dir"):
        run.predict_items(model, items, processor, tokenizer)


# --- git-scratch eval --dataset ------------------------------------------------------------------


def coco_files(root: Path, n_images: int = 3) -> tuple[Path, Path]:
    """captions_val2014.json's layout: images[{id, file_name}], annotations[{image_id, id, caption}]."""
    images = root / "val2014"
    images.mkdir()
    rng = np.random.default_rng(1)
    data: dict = {"images": [], "annotations": []}
    for i in range(n_images):
        name = f"COCO_val2014_{i + 7:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(images / name)
        data["images"].append({"id": i + 7, "file_name": name, "height": 36, "width": 44})
        data["annotations"] += [{"image_id": i + 7, "id": 100 * i + j, "caption": f"w{4 + i + j} w{9 + j}"}
                                for j in range(2)]
    annotations = root / "captions_val2014.json"
    annotations.write_text(json.dumps(data))
    return annotations, images


def test_eval_dataset_scores_a_coco_file_and_writes_its_results(setup: tuple[Path, list[EvalItem]],
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from git_scratch.evaluation.datasets import read_dataset
    from tests.hardening.support import run_cli

    ckpt, _ = setup
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)  # METEOR, SPICE: Java is metrics.py's test
    annotations, images = coco_files(tmp_path)
    results = tmp_path / "captions_results.json"
    got = run_cli("eval", ckpt, "--dataset", "coco", "--annotations", annotations, "--images", images,
                  "--results", results, "--work-dir", tmp_path / "work", "--max-new-tokens", "4", "--json",
                  "--tokenizer", "python")
    assert got.code == 0, got.err
    scores = json.loads(got.out)
    assert scores["tokenizer"] == "python" and scores["n_items"] == scores["n_predicted"] == 3
    assert {"Bleu_4", "ROUGE_L", "CIDEr"} <= set(scores) and scores["CIDEr"] >= 0
    model, processor, tokenizer = load(ckpt)
    items, _ = read_dataset("coco", annotations, images)
    expected = run.predict_items(model, items, processor, tokenizer, max_new_tokens=4, num_workers=0)
    assert json.loads(results.read_text()) == [{"image_id": k, "caption": v} for k, v in expected.items()]
    assert len(list((tmp_path / "work").glob("shard-*.json"))) == 1
    refused = run_cli("eval", ckpt, "--dataset", "coco", "--annotations", annotations, "--images", images,
                      "--results", results)
    assert refused.code == 2 and "already exists; pass --force" in refused.err


def test_eval_dataset_vqav2_by_answer_type_and_only_rank_0_prints(setup: tuple[Path, list[EvalItem]],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.hardening.support import run_cli

    ckpt, _ = setup
    images = tmp_path / "val2014"
    images.mkdir()
    Image.new("RGB", (40, 30), (20, 200, 30)).save(images / "COCO_val2014_000000000042.jpg")
    questions = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "w4 w5 ?", "question_id": 420}, {"image_id": 42, "question": "w6 ?",
                                                                      "question_id": 421}]}
    annotations = {"annotations": [
        {"question_id": 420, "image_id": 42, "answer_type": "yes/no", "answers": [{"answer": "w7"}] * 10},
        {"question_id": 421, "image_id": 42, "answer_type": "number", "answers": [{"answer": "w8"}] * 10}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    argv = ["eval", ckpt, "--dataset", "vqav2", "--questions", tmp_path / "q.json", "--annotations",
            tmp_path / "a.json", "--images", images, "--max-new-tokens", "3"]
    got = run_cli(*argv, "--results", tmp_path / "vqa.json")
    assert got.code == 0, got.err
    shown = dict(line.split(None, 1) for line in got.out.strip().splitlines())
    assert shown["n_questions"] == "2" and {"accuracy", "accuracy_by_type.yes/no", "accuracy_by_type.number"} <= set(
        shown)
    assert [row["question_id"] for row in json.loads((tmp_path / "vqa.json").read_text())] == [420, 421]
    monkeypatch.setenv("RANK", "1")  # as torchrun's second process: it predicts, rank 0 speaks
    quiet = run_cli(*argv)
    assert quiet.code == 0 and quiet.out == ""


def test_eval_flags_of_the_two_modes_do_not_mix(setup: tuple[Path, list[EvalItem]], tmp_path: Path) -> None:
    from tests.hardening.support import error_line, run_cli

    ckpt, _ = setup
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    error_line(run_cli("eval", ckpt, manifest, "--annotations", "x.json"), "--annotations", "--dataset")
    error_line(run_cli("eval", ckpt, manifest, "--dataset", "coco", "--images", tmp_path), "pass one of them")
    error_line(run_cli("eval", ckpt), "MANIFEST", "--dataset")
    error_line(run_cli("eval", ckpt, "--dataset", "coco", "--annotations", "x.json"), "--images")


def test_bench_times_the_data_path_through_run_py() -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[2] / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = bench  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(bench)
        assert bench.data_path_rate(32, workers=1, n_images=8) > 0
    finally:
        del sys.modules["bench"]


def test_original_semantics_decodes_prompts_of_different_lengths_unpadded(setup: tuple[Path, list[EvalItem]]) -> None:
    """semantics="original" counts each row's prompt in its lengths and refuses padded prompts, so a
    batch of questions of different lengths is decoded one prompt length at a time: the same
    predictions as batch 1, with the original's prompts (questions cut as its inference.py cuts them)."""
    ckpt, items = setup
    model, processor, tokenizer = load(ckpt)
    settings = {**GENERATE, "semantics": "original", "num_beams": 2, "length_penalty": 0.6}
    got = run.predict_items(model, items, processor, tokenizer, batch_size=4, num_workers=0, **settings)
    alone = run.predict_items(model, items, processor, tokenizer, batch_size=1, num_workers=0, **settings)
    assert got == alone and len(got) == len(items)
    assert len({len(it.prompt.split()) for it in items if it.prompt}) > 1  # the batches did mix lengths
