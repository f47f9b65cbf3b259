"""Each reader on a small file written in its dataset's published layout (field names and nesting as
the real files have them, extra fields included), missing media counted, malformed files one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from git_scratch.evaluation.datasets import DATASETS, EvalItem, read_dataset
from tests.data.test_video import write_clip


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path)
    return path


def dump(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- COCO captions ------------------------------------------------------------------------------------

def coco_file(path: Path) -> Path:
    return dump(path, {
        "info": {"description": "COCO 2014 Dataset", "version": "1.0", "year": 2014},
        "images": [
            {"license": 3, "file_name": "COCO_val2014_000000391895.jpg", "coco_url": "http://x/391895.jpg",
             "height": 360, "width": 640, "date_captured": "2013-11-14 11:18:45", "flickr_url": "http://y",
             "id": 391895},
            {"license": 4, "file_name": "COCO_val2014_000000522418.jpg", "coco_url": "http://x/522418.jpg",
             "height": 480, "width": 640, "date_captured": "2013-11-14 11:38:44", "flickr_url": "http://y",
             "id": 522418},
            {"license": 4, "file_name": "COCO_val2014_000000184613.jpg", "height": 336, "width": 500, "id": 184613},
        ],
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "BY-NC-SA"}],
        "annotations": [
            {"image_id": 391895, "id": 770337, "caption": "A man with a red helmet on a small moped on a dirt road. "},
            {"image_id": 522418, "id": 770338, "caption": "A woman wearing a net on her head cutting a cake. "},
            {"image_id": 391895, "id": 771687, "caption": "Man riding a motor bike on a dirt road on the countryside."},
            {"image_id": 184613, "id": 772218, "caption": "A child holding a flowered umbrella and petting a yak."},
        ],
        "type": "captions",
    })


def test_coco_captions(tmp_path: Path) -> None:
    path = coco_file(tmp_path / "captions_val2014.json")
    images = tmp_path / "val2014"
    image(images / "COCO_val2014_000000391895.jpg")
    image(images / "COCO_val2014_000000522418.jpg")  # 184613's file is absent
    items, skipped = read_dataset("coco", path, images)
    assert items == [
        EvalItem(391895, images / "COCO_val2014_000000391895.jpg", False, None,
                 ("A man with a red helmet on a small moped on a dirt road. ",
                  "Man riding a motor bike on a dirt road on the countryside."), image_id=391895),
        EvalItem(522418, images / "COCO_val2014_000000522418.jpg", False, None,
                 ("A woman wearing a net on her head cutting a cake. ",), image_id=522418)]
    assert skipped == {"image missing": 1}


def test_coco_malformed_files_are_one_line_errors(tmp_path: Path) -> None:
    images = tmp_path / "val2014"
    images.mkdir()
    data = json.loads(coco_file(tmp_path / "c.json").read_text())
    del data["annotations"][2]["caption"]
    with pytest.raises(ValueError, match=r"bad\.json: annotations\[2\] has no field 'caption'"):
        read_dataset("coco", dump(tmp_path / "bad.json", data), images)
    data = json.loads(coco_file(tmp_path / "c.json").read_text())
    data["annotations"] = {"image_id": 1}  # an object where the list belongs
    with pytest.raises(ValueError, match=r"nest\.json: the file\.annotations is a dict, not a list"):
        read_dataset("coco", dump(tmp_path / "nest.json", data), images)
    data = json.loads(coco_file(tmp_path / "c.json").read_text())
    data["annotations"].append({"image_id": 999, "id": 1, "caption": "an image nobody listed"})
    with pytest.raises(ValueError, match=r"orphan\.json: annotations name image_id 999, which is not in images"):
        read_dataset("coco", dump(tmp_path / "orphan.json", data), images)
    (tmp_path / "text.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"text\.json is not JSON"):
        read_dataset("coco", tmp_path / "text.json", images)
    with pytest.raises(FileNotFoundError, match=r"absent\.json not found"):
        read_dataset("coco", tmp_path / "absent.json", images)


# --- Karpathy ------------------------------------------------------------------------------------------

def karpathy_entry(imgid: int, cocoid: int, split: str, folder: str, raws: list[str]) -> dict:
    sentences = [{"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": imgid, "sentid": 10 * imgid + j}
                 for j, raw in enumerate(raws)]
    return {"filepath": folder, "sentids": [s["sentid"] for s in sentences],
            "filename": f"COCO_{folder}_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
            "sentences": sentences, "cocoid": cocoid}


def test_karpathy_split(tmp_path: Path) -> None:
    path = dump(tmp_path / "dataset_coco.json", {"images": [
        karpathy_entry(0, 391895, "test", "val2014", ["A man on a moped.", "A man rides a bike on a road."]),
        karpathy_entry(1, 9, "train", "train2014", ["A plate of food."]),
        karpathy_entry(2, 522418, "val", "val2014", ["A woman cutting a cake."]),
        karpathy_entry(3, 184613, "restval", "val2014", ["A child with an umbrella."]),
        karpathy_entry(4, 318219, "test", "val2014", ["A computer on a desk."]),
    ], "dataset": "coco"})
    for cocoid, folder in [(391895, "val2014"), (9, "train2014"), (522418, "val2014"), (184613, "val2014")]:
        image(tmp_path / "coco" / folder / f"COCO_{folder}_{cocoid:012d}.jpg")
    items, skipped = read_dataset("karpathy", path, tmp_path / "coco")  # the test split by default
    assert [(i.key, i.media, i.references) for i in items] == [
        (391895, tmp_path / "coco/val2014/COCO_val2014_000000391895.jpg",
         ("A man on a moped.", "A man rides a bike on a road."))]
    assert skipped == {"image missing": 1}  # 318219
    assert [i.key for i in read_dataset("karpathy", path, tmp_path / "coco", split="restval")[0]] == [184613]
    assert [i.media.parent.name for i in read_dataset("karpathy", path, tmp_path / "coco", split="train")[0]] == [
        "train2014"]
    with pytest.raises(ValueError, match="Karpathy split .testing. is unknown; pass one of train, restval, val, test"):
        read_dataset("karpathy", path, tmp_path / "coco", split="testing")
    broken = json.loads(path.read_text())
    broken["images"][4]["sentences"] = [["A computer on a desk."]]
    with pytest.raises(ValueError, match=r"images\[4\]\.sentences\[0\] is a list, not an object"):
        read_dataset("karpathy", dump(tmp_path / "broken.json", broken), tmp_path / "coco")


# --- VQAv2 ---------------------------------------------------------------------------------------------

def vqa_answers(*answers: str) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes" if i % 3 else "maybe", "answer_id": i + 1}
            for i, a in enumerate(answers)]


def vqav2_files(tmp_path: Path, subtype: str = "val2014") -> tuple[Path, Path]:
    questions = dump(tmp_path / f"v2_OpenEnded_mscoco_{subtype}_questions.json", {
        "info": {"description": "This is v2.0 of the VQA dataset."}, "task_type": "Open-Ended",
        "data_type": "mscoco", "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "CC BY"},
        "data_subtype": subtype,
        "questions": [{"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
                      {"image_id": 262148, "question": "What are the people in the background doing?",
                       "question_id": 262148001},
                      {"image_id": 393225, "question": "How many bowls?", "question_id": 393225002}]})
    annotations = dump(tmp_path / f"v2_mscoco_{subtype}_annotations.json", {
        "info": {}, "license": {}, "data_subtype": subtype, "data_type": "mscoco",
        "annotations": [
            {"question_type": "none of the above", "multiple_choice_answer": "down", "answers": vqa_answers(
                "down", "down", "at table", "skateboard", "down", "table", "down", "down", "down", "down"),
             "image_id": 262148, "answer_type": "other", "question_id": 262148000},
            {"question_type": "what are the", "multiple_choice_answer": "watching", "answers": vqa_answers(
                *["watching"] * 6, "spectating", "watching", "watching skateboarder", "watching"),
             "image_id": 262148, "answer_type": "other", "question_id": 262148001},
            {"question_type": "how many", "multiple_choice_answer": "2", "answers": vqa_answers(*["2"] * 10),
             "image_id": 393225, "answer_type": "number", "question_id": 393225002}]})
    return questions, annotations


def test_vqav2_questions_and_annotations(tmp_path: Path) -> None:
    questions, annotations = vqav2_files(tmp_path)
    image(tmp_path / "val2014" / "COCO_val2014_000000262148.jpg")
    items, skipped = read_dataset("vqav2", annotations, tmp_path / "val2014", questions=questions)
    assert skipped == {"image missing": 1}  # 393225's file is absent
    assert items[0] == EvalItem(262148000, tmp_path / "val2014/COCO_val2014_000000262148.jpg", False,
                                "Where is he looking?", ("down", "down", "at table", "skateboard", "down", "table",
                                                         "down", "down", "down", "down"), "other", 262148)
    assert [i.key for i in items] == [262148000, 262148001] and len(items[1].references) == 10
    with pytest.raises(ValueError, match="vqav2 needs its questions file too"):
        read_dataset("vqav2", annotations, tmp_path / "val2014")
    data = json.loads(annotations.read_text())
    del data["annotations"][1]["answers"][4]["answer"]
    with pytest.raises(ValueError, match=r"annotations\[1\]\.answers\[4\] has no field 'answer'"):
        read_dataset("vqav2", dump(tmp_path / "bad.json", data), tmp_path / "val2014", questions=questions)
    data["annotations"] = data["annotations"][:1]
    with pytest.raises(ValueError, match=r"questions\[1\] \(question_id 262148001\) has no entry in .*bad2\.json"):
        read_dataset("vqav2", dump(tmp_path / "bad2.json", data), tmp_path / "val2014", questions=questions)


def test_vqav2_test_dev_has_questions_only(tmp_path: Path) -> None:
    questions, _ = vqav2_files(tmp_path, "test-dev2015")
    image(tmp_path / "test2015" / "COCO_test2015_000000262148.jpg")  # test-dev's images are test2015's
    image(tmp_path / "test2015" / "COCO_test2015_000000393225.jpg")
    items, skipped = read_dataset("vqav2", None, tmp_path / "test2015", questions=questions)
    assert skipped == {} and len(items) == 3
    assert all(i.references == () and i.answer_type is None for i in items)
    assert items[2].media.name == "COCO_test2015_000000393225.jpg" and items[2].image_id == 393225


# --- TextVQA, TextCaps -----------------------------------------------------------------------------------

def test_textvqa(tmp_path: Path) -> None:
    answers = ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
               "dakota digital", "dakota digital", "dakota", "dakota"]
    path = dump(tmp_path / "TextVQA_0.5.1_val.json", {
        "dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
            {"question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
             "image_classes": ["Cassette deck", "Printer"], "flickr_original_url": "https://farm2/o.jpg",
             "flickr_300k_url": "https://farm2/z.jpg", "image_width": 1024, "image_height": 664,
             "answers": answers, "question_tokens": ["what", "is", "the", "brand"], "question_id": 34602,
             "set_name": "val"},
            {"question": "what does the small white text spell?", "image_id": "003a8ae2ef43b901",
             "answers": ["copenhagen"] * 10, "question_id": 34603, "set_name": "val"},
            {"question": "what is written?", "image_id": "00685bc495504d61", "answers": ["stop"] * 10,
             "question_id": 34604, "set_name": "val"}]})
    image(tmp_path / "train_images" / "003a8ae2ef43b901.jpg")
    items, skipped = read_dataset("textvqa", path, tmp_path / "train_images")
    assert skipped == {"image missing": 1}
    assert items[0] == EvalItem(34602, tmp_path / "train_images/003a8ae2ef43b901.jpg", False,
                                "what is the brand of this camera?", tuple(answers), image_id="003a8ae2ef43b901")
    data = json.loads(path.read_text())
    data["data"][1]["answers"] = "copenhagen"
    with pytest.raises(ValueError, match=r"data\[1\]\.answers is a str, not a list"):
        read_dataset("textvqa", dump(tmp_path / "bad.json", data), tmp_path / "train_images")


def test_textcaps_groups_the_entries_of_an_image(tmp_path: Path) -> None:
    refs = ["Coca Cola bottles on a shelf.", "A row of Coke bottles.", "Bottles of coca-cola.",
            "Many bottles labelled Coca Cola.", "Coca-Cola bottles stand in a line."]
    entry = {"image_id": "011e7e629fb9ae7b", "image_classes": ["Bottle"], "flickr_original_url": "https://o",
             "flickr_300k_url": "https://z", "image_width": 1024, "image_height": 768, "set_name": "val",
             "image_name": "011e7e629fb9ae7b", "image_path": "train/011e7e629fb9ae7b.jpg", "reference_strs": refs,
             "reference_tokens": [r.lower().split() for r in refs]}
    data = [entry | {"caption_id": 100 + j, "caption_str": r, "caption_tokens": r.lower().split()}
            for j, r in enumerate(refs)]
    data.append(entry | {"image_id": "0a0bc91825468c45", "caption_id": 7, "caption_str": "a sign",
                         "reference_strs": ["a sign"]})
    path = dump(tmp_path / "TextCaps_0.1_val.json", {"dataset_type": "val", "dataset_name": "textcaps",
                                                      "dataset_version": "0.1", "data": data})
    image(tmp_path / "train_images" / "011e7e629fb9ae7b.jpg")
    items, skipped = read_dataset("textcaps", path, tmp_path / "train_images")
    assert items == [EvalItem("011e7e629fb9ae7b", tmp_path / "train_images/011e7e629fb9ae7b.jpg", False, None,
                              tuple(refs), image_id="011e7e629fb9ae7b")]
    assert skipped == {"image missing": 1}
    del data[0]["image_id"]
    with pytest.raises(ValueError, match=r"bad\.json: data\[0\] has no field 'image_id'"):
        read_dataset("textcaps", dump(tmp_path / "bad.json", {"data": data}), tmp_path / "train_images")


# --- MSRVTT-QA -----------------------------------------------------------------------------------------------

def test_msrvtt_qa_videos(tmp_path: Path) -> None:
    path = dump(tmp_path / "val_qa.json", [
        {"answer": "fly", "category_id": 0, "id": 158581, "question": "what is a cartoon doing?", "video_id": 6513},
        {"answer": "cartoon", "category_id": 0, "id": 158582, "question": "what is flying?", "video_id": 6513},
        {"answer": "man", "category_id": 1, "id": 158583, "question": "who is talking?", "video_id": 6514}])
    videos = tmp_path / "video"
    videos.mkdir()
    write_clip(videos / "video6513.mp4", [0, 60, 120, 180])
    items, skipped = read_dataset("msrvtt-qa", path, videos)
    assert skipped == {"video missing": 1}
    assert items == [
        EvalItem(158581, videos / "video6513.mp4", True, "what is a cartoon doing?", ("fly",), image_id=6513),
        EvalItem(158582, videos / "video6513.mp4", True, "what is flying?", ("cartoon",), image_id=6513)]
    with pytest.raises(ValueError, match=r"nested\.json holds a JSON dict, not the list of MSRVTT-QA"):
        read_dataset("msrvtt-qa", dump(tmp_path / "nested.json", {"data": []}), videos)


def test_arguments_that_do_not_fit_the_kind(tmp_path: Path) -> None:
    path = coco_file(tmp_path / "captions_val2014.json")
    with pytest.raises(ValueError, match="dataset kind .flickr. is unknown; pass one of " + ", ".join(DATASETS)):
        read_dataset("flickr", path, tmp_path)
    with pytest.raises(ValueError, match="--split applies to the karpathy file only"):
        read_dataset("coco", path, tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="media folder .*nowhere not found"):
        read_dataset("coco", path, tmp_path / "nowhere")
