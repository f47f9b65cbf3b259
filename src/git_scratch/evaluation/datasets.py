"""The evaluation datasets' own files -> EvalItems: one image or video, its prompt, its references.

Each reader takes the file as the dataset publishes it, with no conversion step:

    coco       captions_val2014.json: images[{id, file_name}], annotations[{image_id, id, caption}];
               media: the image folder; key: image id
    karpathy   dataset_coco.json: images[{filepath, filename, split, cocoid, sentences[{raw, tokens}]}];
               media: the folder holding val2014/ and train2014/; key: cocoid; split test (default),
               val, restval or train
    vqav2      questions v2_OpenEnded_mscoco_val2014_questions.json: data_subtype,
               questions[{image_id, question, question_id}], and annotations v2_mscoco_val2014_annotations.json:
               annotations[{question_id, answer_type, answers[{answer}]}] (test-dev: questions only);
               media: the folder of COCO_<subtype>_%012d.jpg; key: question id
    textvqa    TextVQA_0.5.1_val.json: data[{question, question_id, image_id, answers}];
               media: the folder of <image_id>.jpg; key: question id
    textcaps   TextCaps_0.1_val.json: data[{image_id, caption_str, reference_strs}], one entry per caption;
               media: the folder of <image_id>.jpg; key: image id
    msrvtt-qa  val_qa.json / test_qa.json: [{question, answer, id, video_id}];
               media: the folder of video<video_id>.mp4; key: question id

Where the formats come from: COCO's captions files and VQAv2's pairs are the layouts pycocotools'
COCO and the VQA API (GT-Vision-Lab/VQA, PythonApi/vqaTools/vqa.py, which indexes questions and
annotations by question_id) read; test-dev questions name test2015 images, so a "test*" data_subtype
maps to COCO_test2015_*.jpg. The Karpathy split is the dataset_coco.json of Karpathy's NeuralTalk
(Flickr versions lack filepath and cocoid: then the media folder and imgid are used). TextVQA and
TextCaps are the "data" lists of the files dl.fbaipublicfiles.com/textvqa serves (a TextCaps reader
found by the code search, mattvall1/fyp-video_object_timestamp_finder, reads data[].reference_strs
from TextCaps_0.1_val.json); their test files carry no answers / captions. MSRVTT-QA is Xu et
al.'s list of {question, answer, id, video_id, category_id}, as video_vlm_eval's MSRVTTQADataset
(also found by the code search) reads test_qa.json, with the videos named video<video_id>.mp4.

A file that is not in the format (a missing field, a list where an object belongs) is one
ValueError naming the file, the entry and the field. An example whose image or video is not on
disk is skipped and counted in the second return value, {"image missing": n}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = ("coco", "karpathy", "vqav2", "textvqa", "textcaps", "msrvtt-qa")
KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass(frozen=True)
class EvalItem:
    key: int | str  # COCO/Karpathy/TextCaps: image id; VQAv2/TextVQA/MSRVTT-QA: question id
    media: Path  # image or video file
    is_video: bool
    prompt: str | None  # the question, None for a caption
    references: tuple[str, ...]  # reference captions, or the (10) answers; empty on a test split
    answer_type: str | None = None  # VQAv2 "yes/no" | "number" | "other"
    image_id: int | str | None = None  # the image the question is about (VQA), for result files


def read_dataset(kind: str, annotations: Path | None, media: Path, *, questions: Path | None = None,
                 split: str | None = None) -> tuple[list[EvalItem], dict[str, int]]:
    """The items of one dataset file and the counts of examples skipped, by reason."""
    if kind not in DATASETS:
        raise ValueError(f"dataset kind {kind!r} is unknown; pass one of {', '.join(DATASETS)}")
    if split is not None and kind != "karpathy":
        raise ValueError(f"--split applies to the karpathy file only, not to {kind}; "
                         "pass the split's own annotation file instead")
    if questions is not None and kind != "vqav2":
        raise ValueError(f"--questions applies to vqav2 only; {kind} keeps its questions in the annotation file")
    if annotations is None and kind != "vqav2":
        raise ValueError(f"{kind} needs its annotation file; pass it with --annotations")
    media = Path(media)
    if not media.is_dir():
        raise FileNotFoundError(f"media folder {media} not found; pass the folder holding the dataset's images "
                                "or videos")
    if kind == "vqav2":
        return _checked(read_vqav2(annotations, questions, media))
    if kind == "karpathy":
        return _checked(read_karpathy(Path(annotations), media, split or "test"))
    readers: dict[str, Callable[[Path, Path], list[EvalItem]]] = {
        "coco": read_coco, "textvqa": read_textvqa, "textcaps": read_textcaps, "msrvtt-qa": read_msrvtt_qa}
    return _checked(readers[kind](Path(annotations), media))


def read_coco(path: Path, media: Path) -> list[EvalItem]:
    data = _load(path, dict, "COCO captions (captions_val2014.json)")
    images = _field(data, "images", path, "the file", list)
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(_field(data, "annotations", path, "the file", list)):
        where = f"annotations[{i}]"
        _object(ann, path, where)
        captions.setdefault(_field(ann, "image_id", path, where, (int, str)), []).append(
            _field(ann, "caption", path, where, str))
    ids = set()
    items = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        _object(image, path, where)
        image_id = _field(image, "id", path, where, (int, str))
        ids.add(image_id)
        items.append(EvalItem(image_id, media / _field(image, "file_name", path, where, str), False, None,
                              tuple(captions.get(image_id, ())), image_id=image_id))
    orphan = next((k for k in captions if k not in ids), None)
    if orphan is not None:
        raise ValueError(f"{path}: annotations name image_id {orphan!r}, which is not in images[]; "
                         "is the file cut down? keep each caption's image entry")
    return items


def read_karpathy(path: Path, media: Path, split: str) -> list[EvalItem]:
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"Karpathy split {split!r} is unknown; pass one of {', '.join(KARPATHY_SPLITS)}")
    data = _load(path, dict, "the Karpathy split (dataset_coco.json)")
    items = []
    for i, image in enumerate(_field(data, "images", path, "the file", list)):
        where = f"images[{i}]"
        _object(image, path, where)
        if _field(image, "split", path, where, str) != split:
            continue
        # dataset_coco.json has filepath (train2014/val2014) and cocoid; the Flickr files have neither.
        folder = media / image["filepath"] if "filepath" in image else media
        key = image["cocoid"] if "cocoid" in image else _field(image, "imgid", path, where, (int, str))
        sentences = _field(image, "sentences", path, where, list)
        refs = tuple(_field(_object(s, path, f"{where}.sentences[{j}]"), "raw", path, f"{where}.sentences[{j}]",
                            str) for j, s in enumerate(sentences))
        items.append(EvalItem(key, folder / _field(image, "filename", path, where, str), False, None, refs,
                              image_id=key))
    return items


def read_vqav2(annotations: Path | None, questions: Path | None, media: Path) -> list[EvalItem]:
    if questions is None:
        raise ValueError("vqav2 needs its questions file too; pass --questions "
                         "v2_OpenEnded_mscoco_val2014_questions.json (test-dev: the questions file alone)")
    data = _load(Path(questions), dict, "VQAv2 questions (v2_OpenEnded_mscoco_*_questions.json)")
    subtype = _field(data, "data_subtype", questions, "the file", str)
    prefix = "test2015" if subtype.startswith("test") else subtype  # test-dev2015 questions use test2015 images
    answers: dict[Any, tuple[tuple[str, ...], str]] = {}
    if annotations is not None:
        labels = _load(Path(annotations), dict, "VQAv2 annotations (v2_mscoco_*_annotations.json)")
        for i, ann in enumerate(_field(labels, "annotations", annotations, "the file", list)):
            where = f"annotations[{i}]"
            _object(ann, annotations, where)
            refs = tuple(_field(_object(a, annotations, f"{where}.answers[{j}]"), "answer", annotations,
                                f"{where}.answers[{j}]", str)
                         for j, a in enumerate(_field(ann, "answers", annotations, where, list)))
            answers[_field(ann, "question_id", annotations, where, (int, str))] = (
                refs, _field(ann, "answer_type", annotations, where, str))
    items = []
    for i, q in enumerate(_field(data, "questions", questions, "the file", list)):
        where = f"questions[{i}]"
        _object(q, questions, where)
        qid = _field(q, "question_id", questions, where, (int, str))
        image_id = _field(q, "image_id", questions, where, int)
        if annotations is not None and qid not in answers:
            raise ValueError(f"{questions}: {where} (question_id {qid}) has no entry in {annotations}; "
                             "pass the annotations of the same split")
        refs, answer_type = answers.get(qid, ((), None))
        items.append(EvalItem(qid, media / f"COCO_{prefix}_{image_id:012d}.jpg", False,
                              _field(q, "question", questions, where, str), refs, answer_type, image_id))
    return items


def read_textvqa(path: Path, media: Path) -> list[EvalItem]:
    items = []
    for where, entry in _data_entries(path, "TextVQA (TextVQA_0.5.1_*.json)"):
        image_id = _field(entry, "image_id", path, where, str)
        answers = _field(entry, "answers", path, where, list) if "answers" in entry else []  # test: none
        if not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}: {where}.answers is not a list of strings; "
                             "is this the dataset's file as published?")
        items.append(EvalItem(_field(entry, "question_id", path, where, (int, str)), media / f"{image_id}.jpg",
                              False, _field(entry, "question", path, where, str), tuple(answers),
                              image_id=image_id))
    return items


def read_textcaps(path: Path, media: Path) -> list[EvalItem]:
    refs: dict[str, list[str]] = {}  # one entry per caption: the image's references, in file order
    for where, entry in _data_entries(path, "TextCaps (TextCaps_0.1_*.json)"):
        image_id = _field(entry, "image_id", path, where, str)
        captions = refs.setdefault(image_id, [])
        if "reference_strs" in entry:  # the image's five references, repeated on each of its entries
            strs = _field(entry, "reference_strs", path, where, list)
            if not all(isinstance(s, str) for s in strs):
                raise ValueError(f"{path}: {where}.reference_strs is not a list of strings; "
                                 "is this the dataset's file as published?")
            captions[:] = strs
        elif "caption_str" in entry:
            captions.append(_field(entry, "caption_str", path, where, str))
    return [EvalItem(image_id, media / f"{image_id}.jpg", False, None, tuple(captions), image_id=image_id)
            for image_id, captions in refs.items()]


def read_msrvtt_qa(path: Path, media: Path) -> list[EvalItem]:
    items = []
    for i, entry in enumerate(_load(path, list, "MSRVTT-QA (val_qa.json / test_qa.json)")):
        where = f"[{i}]"
        _object(entry, path, where)
        video_id = _field(entry, "video_id", path, where, (int, str))
        items.append(EvalItem(_field(entry, "id", path, where, (int, str)), media / f"video{video_id}.mp4", True,
                              _field(entry, "question", path, where, str),
                              (_field(entry, "answer", path, where, str),), image_id=video_id))
    return items


# --- checks ---------------------------------------------------------------------------------------

def _checked(items: list[EvalItem]) -> tuple[list[EvalItem], dict[str, int]]:
    """Drop the items whose file is not on disk, counting them; each file is looked at once."""
    present: dict[Path, bool] = {}
    kept, skipped = [], {}
    for item in items:
        if item.media not in present:
            present[item.media] = item.media.is_file()
        if present[item.media]:
            kept.append(item)
        else:
            reason = "video missing" if item.is_video else "image missing"
            skipped[reason] = skipped.get(reason, 0) + 1
    return kept, skipped


def _load(path: Path, shape: type, expected: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the dataset's {expected} file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON ({' '.join(str(e).split())}); pass the dataset's {expected} file") \
            from None
    if not isinstance(data, shape):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not the {shape.__name__} of {expected}; "
                         "pass the dataset's file as published")
    return data


def _data_entries(path: Path, expected: str) -> list[tuple[str, dict]]:
    entries = _field(_load(path, dict, expected), "data", path, "the file", list)
    return [(f"data[{i}]", _object(entry, path, f"data[{i}]")) for i, entry in enumerate(entries)]


def _object(value: Any, path: Path, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} is a {type(value).__name__}, not an object; "
                         "is this the dataset's file as published?")
    return value


def _field(record: dict, name: str, path: Path, where: str, kind: type | tuple[type, ...]) -> Any:
    if name not in record:
        raise ValueError(f"{path}: {where} has no field {name!r}; is this the dataset's file as published?")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{path}: {where}.{name} is a {type(value).__name__}, not a {names}; "
                         "is this the dataset's file as published?")
    return value
