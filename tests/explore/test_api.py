"""The explorer's JSON API over real HTTP (a server on port 0 in a thread, urllib as the client):
each answer equals the library's own for the same input, bad uploads get the CLI's one-line
messages, an over-size upload is refused before its body is read, model work is serialised."""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import git_scratch.explore.session as session_module
from git_scratch.tools.attention import attention_maps, capturing
from git_scratch.tools.pictures import draw_mask
from tests.explore.support import (  # noqa: F401 (app, files, one_thread: fixtures)
    TOKENS,
    Running,
    api,
    app,
    call,
    files,
    ids,
    one_thread,
    pixels,
    refused,
    through_eos,
    upload,
)
from tests.hardening.support import PREFIX, check_message, run_cli
from tests.hardening.test_bad_media import giant_png


# --- what the page shows equals the library ----------------------------------------------------


def test_info_and_localhost_only(app: Running) -> None:
    assert app.server.server_address[0] == "127.0.0.1"
    info = api(app.url, "/api/info")
    cfg = app.explorer.model.cfg
    assert (info["layers"], info["heads"], info["grid"], info["frames"]) == (cfg.n_layer, cfg.n_head, [4, 4], 1)
    assert info["max_upload_bytes"] == 100 * 2**20 and ".mp4" in info["accepted"]
    for headers in ({"Host": "evil.example:80"}, {"Origin": "http://evil.example"}):
        status, message = refused(app.url, "/api/info", headers=headers)
        assert status == 403 and "evil.example" in message


def test_caption_greedy_and_beams_equal_generate(app: Running, files: dict[str, Path]) -> None:
    model, eos = app.explorer.model, app.explorer.model.cfg.eos_id
    media = upload(app.url, files["image"])
    assert media["kind"] == "image" and media["frames"] == 1
    result = api(app.url, "/api/caption", {"media_id": media["media_id"], "num_beams": 3, "max_new_tokens": TOKENS})
    pixel_values = pixels(app.explorer, files["image"])
    greedy = through_eos(model.generate(pixel_values, max_new_tokens=TOKENS)[0, 1:], eos)
    assert ids(result["greedy"]) == greedy
    assert result["greedy"]["text"] == app.explorer.tokenizer.decode_answer(greedy)
    # the greedy score, recomputed from one plain forward pass: the sum of the chosen tokens' log-probabilities
    text = torch.tensor([[model.cfg.bos_id, *greedy]])
    with torch.no_grad():
        log_probs = model(pixel_values, text)[0, :-1].log_softmax(-1)  # (K, V): row t chose token t + 1
    expected = log_probs.gather(1, text[0, 1:, None]).sum().item()
    assert result["greedy"]["score"] == pytest.approx(expected, rel=1e-5)

    best = model.generate(pixel_values, max_new_tokens=TOKENS, num_beams=3, return_dict_in_generate=True,
                          output_scores=True)
    beams = result["beams"]
    assert len(beams) == 3 and ids(beams[0]) == through_eos(best.sequences[0, 1:], eos)
    assert beams[0]["score"] == pytest.approx(best.sequences_scores[0].item(), rel=1e-6)
    scores = [beam["score"] for beam in beams]
    assert scores == sorted(scores, reverse=True)
    assert len({beam["sequence_id"] for beam in [result["greedy"], *beams]}) == 4
    assert api(app.url, "/api/caption", {"media_id": media["media_id"], "num_beams": 1})["beams"] == []


def test_answer_equals_git_answer_and_the_image_is_encoded_once(app: Running, files: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = app.explorer.model, app.explorer.tokenizer
    encodes = []
    encode_image = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda *a, **k: encodes.append(1) or encode_image(*a, **k))
    media = upload(app.url, files["image"])["media_id"]
    pixel_values = pixels(app.explorer, files["image"])
    for question in ("w4 w5", "w7"):
        seq = api(app.url, "/api/answer", {"media_id": media, "question": question, "max_new_tokens": TOKENS})
        expected = model.answer(pixel_values, [tokenizer.prompt_ids(question)], max_new_tokens=TOKENS)[0]
        assert ids(seq) == through_eos(expected, model.cfg.eos_id)
        assert seq["text"] == tokenizer.decode_answer(expected) and seq["prompt"] == question
    api(app.url, "/api/caption", {"media_id": media, "max_new_tokens": TOKENS})
    assert len(encodes) == 1 + 2  # the explorer's one prefix, then model.answer's own two encodes
    for question in ("", "   ", 5):
        assert refused(app.url, "/api/answer", {"media_id": media, "question": question})[0] == 400


def test_attention_equals_the_attention_tool(app: Running, files: dict[str, Path]) -> None:
    model = app.explorer.model
    media = upload(app.url, files["image"])["media_id"]
    seq = api(app.url, "/api/caption", {"media_id": media, "num_beams": 2, "max_new_tokens": TOKENS})
    pixel_values, prompt = pixels(app.explorer, files["image"]), torch.tensor([[model.cfg.bos_id]])
    greedy = seq["greedy"]
    for layer, head in ((0, "mean"), (1, "mean"), (1, 2), ("rollout", "mean")):
        expected = attention_maps(model, pixel_values, prompt, max_new_tokens=TOKENS, use_rollout=layer == "rollout",
                                  layers=None if layer == "rollout" else [layer],
                                  head=None if head == "mean" else head)
        assert expected.tokens == ids(greedy)
        for k in (0, len(expected.tokens) - 1):
            got = api(app.url, "/api/attention", {"sequence_id": greedy["sequence_id"], "token": k, "layer": layer,
                                                   "head": head})
            assert torch.equal(torch.tensor(got["map"], dtype=torch.float32), expected.maps[0, k])  # JSON is exact
            assert got["image_share"] == expected.image_share[0, k].item()
            assert got["grid"] == [4, 4] and got["frame"] == 0 and got["token"]["id"] == expected.tokens[k]
    # a beam's sequence: the raw probabilities of one capture pass, head 3 of layer 0, last token's choosing row
    beam = seq["beams"][1]
    text = torch.tensor([[model.cfg.bos_id, *ids(beam)]])
    with torch.no_grad(), capturing(model) as sinks:
        model(pixel_values, text)
    row = 17 + len(beam["tokens"]) - 1  # 16 patches + CLS, then [CLS] and the tokens before the last
    got = api(app.url, "/api/attention", {"sequence_id": beam["sequence_id"], "token": len(beam["tokens"]) - 1,
                                          "layer": 0, "head": 3})
    assert torch.equal(torch.tensor(got["map"], dtype=torch.float32).flatten(), sinks[0][0][0, 3, row, 1:17].float())


@pytest.mark.parametrize(("fields", "status", "needle"), [
    ({"token": 99}, 400, '"token"'), ({"layer": 2}, 400, '"layer"'), ({"layer": "last"}, 400, '"layer"'),
    ({"head": 4}, 400, '"head"'), ({"layer": "rollout", "head": 1}, 400, "rollout"), ({"frame": 1}, 400, '"frame"'),
    ({"sequence_id": "nope"}, 404, "nope"), ({"sequence_id": ["a"]}, 404, "['a']"), ({"colour": "red"}, 400, "colour"),
])
def test_bad_attention_requests_are_one_line(app: Running, files: dict[str, Path], fields: dict, status: int,
                                              needle: str) -> None:
    media = upload(app.url, files["image"])["media_id"]
    seq = api(app.url, "/api/caption", {"media_id": media, "num_beams": 1, "max_new_tokens": TOKENS})["greedy"]
    body = {"sequence_id": seq["sequence_id"], "token": 0, "layer": 0, **fields}
    got_status, message = refused(app.url, "/api/attention", body)
    assert got_status == status and needle in message


def test_mask_is_the_mask_commands_picture_of_the_sequence(app: Running, files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    media = upload(app.url, files["image"])["media_id"]
    seq = api(app.url, "/api/caption", {"media_id": media, "num_beams": 1, "max_new_tokens": TOKENS})["greedy"]
    status, kind, payload = call(app.url, f"/api/mask/{seq['sequence_id']}.png")
    assert (status, kind) == (200, "image/png")
    expected = tmp_path / "mask.png"
    draw_mask(expected, app.explorer.model.attention_mask, n_image=17, n_text=1 + len(seq["tokens"]),
              title=f"{app.explorer.name}: attention mask of this sequence")
    assert np.array_equal(np.array(Image.open(io.BytesIO(payload))), np.array(Image.open(expected)))


def test_preview_is_what_the_model_sees(app: Running, files: dict[str, Path]) -> None:
    media = upload(app.url, files["image"])
    status, kind, payload = call(app.url, media["preview"])
    assert (status, kind) == (200, "image/png")
    shown = torch.from_numpy(np.array(Image.open(io.BytesIO(payload)))).permute(2, 0, 1).double()  # (3, 32, 32)
    processor = app.explorer.processor
    seen = pixels(app.explorer, files["image"])[0].double()
    mean, std = torch.tensor(processor.mean)[:, None, None], torch.tensor(processor.std)[:, None, None]
    unnormalised = (seen * std + mean) * 255
    assert (shown - unnormalised).abs().max() < 0.5 + 1e-3  # the PNG's rounding to 8 bits, nothing else
    assert refused(app.url, media["preview"] + "?frame=1")[0] == 400
    assert refused(app.url, "/api/media/0123.png")[0] == 404


# --- uploads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "make", "status"), [
    ("photo.jpg", lambda image: b"just some text, not a photo\n", 415),
    ("cut.png", lambda image: image.read_bytes()[:300], 400),
    ("bomb.png", lambda image: giant_png(100_000, 100_000), 415),
], ids=["text-as-jpg", "truncated-png", "decompression-bomb"])
def test_bad_uploads_get_the_clis_one_line_message(app: Running, files: dict[str, Path], tmp_path: Path,
                                                  name: str, make: Any, status: int) -> None:
    path = tmp_path / name
    path.write_bytes(make(files["image"]))
    cli = run_cli("caption", files["image_ckpt"], path, "--max-new-tokens", "2")
    assert cli.code == 1 and cli.err.count("\n") == 1 and cli.err.startswith(PREFIX), cli.err
    expected = cli.err.strip().removeprefix(PREFIX).replace(str(path), name)
    assert refused(app.url, "/api/upload", path.read_bytes(), {"X-Filename": name}) == (status, expected)
    check_message(expected, name)  # a documented template (docs/errors.md)
    assert not any(app.explorer.store.glob(f"*/{name}"))  # nothing of a refused upload is kept


def test_a_non_ascii_name_is_percent_encoded(app: Running, files: dict[str, Path]) -> None:
    status, message = refused(app.url, "/api/upload", b"text", {"X-Filename": "%E5%86%99%E7%9C%9F.jpg"})
    assert status == 415 and message.startswith("写真.jpg is neither")


def test_over_size_upload_is_refused_before_its_body_is_read(app: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    monkeypatch.setattr(session_module, "sniff_media", lambda *a: decoded.append(a))
    host, port = app.server.server_address[:2]
    for path, length in (("/api/upload", app.explorer.max_upload_bytes + 1), ("/api/caption", 2**16 + 1)):
        connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.putrequest("POST", path)
        connection.putheader("Content-Length", str(length))
        connection.endheaders()  # and no body at all: the answer cannot depend on reading one
        response = connection.getresponse()
        assert response.status == 413 and str(length) in json.loads(response.read())["error"]
        connection.close()
    assert decoded == []
    with pytest.raises(session_module.ApiError) as e:  # the same limit without HTTP
        app.explorer.upload(bytes(app.explorer.max_upload_bytes + 1), "big.png")
    assert e.value.status == 413 and decoded == []
    assert refused(app.url, "/api/caption", b"{not json")[0] == 400


def test_model_work_is_serialised(app: Running, files: dict[str, Path]) -> None:
    """Hooks on every decoder block count the passes inside the model at once. Two threads calling
    generate directly overlap (the count can see it); two concurrent caption requests never do."""
    model = app.explorer.model
    inside, most = [0], [0]
    lock = threading.Lock()

    def enter(*_: Any) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # stay inside long enough for a second pass to arrive if nothing stops it

    def leave(*_: Any) -> None:
        with lock:
            inside[0] -= 1

    handles = [h for block in model.blocks for h in (block.register_forward_pre_hook(enter),
                                                     block.register_forward_hook(leave))]
    try:
        pixel_values = pixels(app.explorer, files["image"])
        run_together([lambda: model.generate(pixel_values, max_new_tokens=3)] * 2)
        assert most[0] == 2  # the instrument sees overlap when there is some
        most[0] = 0
        media = [upload(app.url, files["image"])["media_id"] for _ in range(2)]
        results = run_together([lambda m=m: api(app.url, "/api/caption", {"media_id": m, "num_beams": 2,
                                                                          "max_new_tokens": 3}) for m in media])
        assert all(r["greedy"]["tokens"] for r in results) and most[0] == 1
    finally:
        for handle in handles:
            handle.remove()


def run_together(jobs: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    start_line = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        start_line.wait()
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results
