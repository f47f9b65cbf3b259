"""Generation without transformers: the cache, sampling, prefix reuse, answers and the trie."""

from __future__ import annotations

import pytest
import torch

from git_scratch import GIT
from git_scratch.generation.prefix import decode_step, encode_prefix, prefill
from git_scratch.generation.search import pad_after_eos
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model() -> GIT:
    torch.manual_seed(0)
    return GIT.from_config(tiny_config(init_std=0.5)).eval()


def count_vision_calls(model: GIT) -> list[int]:
    calls = [0]
    model.vision.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("init_std", "dtype", "atol"), [(0.2, torch.float32, 1e-5), (0.5, torch.float64, 1e-10)])
def test_cached_steps_equal_full_forward(init_std: float, dtype: torch.dtype, atol: float) -> None:
    """Logits from prefill + one-token cached steps equal one full forward pass (fp32 at a
    moderate init; fp64 at a large one, where fp32 rounding alone exceeds 1e-5)."""
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(init_std=init_std)).eval().to(dtype)
    pixel_values = torch.randn(2, 3, 32, 32, dtype=dtype)
    input_ids = torch.randint(3, 99, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    with torch.no_grad():
        full = model(pixel_values, input_ids, attention_mask)  # (2, 9, V)
        prefix = encode_prefix(model, pixel_values)
        state, logits = prefill(model, prefix, torch.arange(2), input_ids[:, :4], attention_mask[:, :4], 5)
        steps = [logits]
        for t in range(4, 9):
            steps.append(decode_step(model, state, input_ids[:, t:t + 1], t))
    for i, logits in enumerate(steps[:-1]):
        torch.testing.assert_close(logits, full[:, 3 + i].float(), atol=atol, rtol=0)


def test_one_row_per_image_decodes_in_the_prefix_caches(model: GIT) -> None:
    """With room, prefill decodes in the prefix's own caches (no copy of the image slots), and the
    logits, the steps and generate's tokens equal the copying path's, twice over the same prefix."""
    torch.manual_seed(1)
    pixel_values, input_ids = torch.randn(3, 3, 32, 32), torch.randint(3, 99, (3, 4))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0  # a left-padded row
    with torch.no_grad():
        copied = prefill(model, encode_prefix(model, pixel_values), torch.arange(3), input_ids, attention_mask, 5)
        roomy = encode_prefix(model, pixel_values, room=4 + 5)
        for _ in range(2):  # the second decode finds the first one's text in the slots, unseen
            state, logits = prefill(model, roomy, torch.arange(3), input_ids, attention_mask, 5)
            assert all(a is b for a, b in zip(state.caches, roomy.caches))
            torch.testing.assert_close(logits, copied[1], rtol=0, atol=0)
            token = logits.argmax(-1, keepdim=True)
            torch.testing.assert_close(decode_step(model, state, token, 4), decode_step(model, copied[0], token, 4),
                                       rtol=0, atol=0)
        state, _ = prefill(model, roomy, torch.tensor([0, 0, 1]), input_ids, attention_mask, 5)  # not one row each
        assert all(a is not b for a, b in zip(state.caches, roomy.caches))
        tokens = model.generate(pixel_values, input_ids, attention_mask, max_new_tokens=5)
        prefix = encode_prefix(model, pixel_values)  # a caller's prefix: copied, as before
        assert torch.equal(model.generate(None, input_ids, attention_mask, max_new_tokens=5, prefix=prefix), tokens)


def test_beam_search_encodes_each_image_once(model: GIT) -> None:
    calls = count_vision_calls(model)
    model.generate(torch.randn(2, 3, 32, 32), num_beams=3, num_return_sequences=2, max_new_tokens=5)
    assert calls[0] == 1


def test_answer_shares_the_image_and_matches_single_calls(model: GIT) -> None:
    pixel_values = torch.randn(1, 3, 32, 32)
    questions = [[1, 5, 6, 7], [1, 8], [1, 9, 10], [1], [1, 11, 12, 13, 14]]
    calls = count_vision_calls(model)
    batched = model.answer(pixel_values, questions, max_new_tokens=6)
    assert calls[0] == 1
    # The generated ids alone, left-aligned: column 0 is each answer's first token.
    for row, q in enumerate(questions):
        alone = model.generate(pixel_values, torch.tensor([q]), max_new_tokens=6)
        assert torch.equal(alone[0, len(q):], batched[row, :alone.shape[1] - len(q)])
    beams = model.answer(pixel_values, questions, max_new_tokens=4, num_beams=3)
    assert beams.shape[0] == len(questions)


def test_answer_asks_every_question_about_every_image() -> None:
    """B images, Q questions: row b * Q + q is question q about image b, each image encoded once,
    and equal to asking that question about that image alone."""
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(init_std=0.5)).eval()
    pixel_values = torch.randn(3, 3, 32, 32)
    questions = [[1, 5, 6, 7], [1, 8], [1]]
    calls = count_vision_calls(model)
    ids = model.answer(pixel_values, questions, max_new_tokens=5)
    assert calls[0] == 1 and ids.shape[0] == 3 * 3
    for b in range(3):
        for q, question in enumerate(questions):
            alone = model.answer(pixel_values[b:b + 1], [question], max_new_tokens=5)[0]
            assert torch.equal(ids[b * 3 + q, :len(alone)], alone)
            assert (ids[b * 3 + q, len(alone):] == model.cfg.pad_id).all()
    assert len({tuple(row.tolist()) for row in ids}) > 3  # different images and questions, different answers


def test_answer_rows_are_padded_after_their_first_eos() -> None:
    """Greedy pads finished rows with pad, beam search with EOS; answer() gives one convention:
    the first EOS kept, pad_id after it, whatever the search."""
    torch.manual_seed(0)
    model = GIT.from_config(tiny_config(init_std=0.5)).eval()
    cfg = model.cfg
    with torch.no_grad():
        model.lm_head.bias[cfg.eos_id] += 3.0  # early EOS in some rows, not all
    pixel_values = torch.randn(4, 3, 32, 32)
    for kwargs in ({}, {"num_beams": 3}):
        ids = model.answer(pixel_values, [[1, 5], [1]], max_new_tokens=8, **kwargs).tolist()
        ended_early = [row for row in ids if cfg.eos_id in row[:-1]]
        assert ended_early, kwargs  # some answer ended before the longest one: there is padding to check
        for row in ended_early:
            assert set(row[row.index(cfg.eos_id) + 1:]) == {cfg.pad_id}, (kwargs, row)
    eos, pad = cfg.eos_id, cfg.pad_id
    raw = torch.tensor([[5, eos, eos, eos], [eos, 7, 7, 7], [5, 6, 7, 8]])  # beam fill, junk after EOS, no EOS
    assert pad_after_eos(raw, eos, pad).tolist() == [[5, eos, pad, pad], [eos, pad, pad, pad], [5, 6, 7, 8]]


def test_sampling_is_seeded_and_top_k_one_is_greedy(model: GIT) -> None:
    pixel_values = torch.randn(3, 3, 32, 32)
    run = lambda seed, **kw: model.generate(pixel_values, do_sample=True, max_new_tokens=8,
                                            generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7, temperature=5.0), run(8, temperature=5.0))
    assert torch.equal(run(3, top_k=1), model.generate(pixel_values, max_new_tokens=8))
    several = run(1, num_return_sequences=4, temperature=3.0)
    assert several.shape[0] == 12


def test_sampling_follows_the_distribution() -> None:
    """First sampled tokens on a 5-token vocab follow softmax(logits / T) restricted by top-p."""
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=8, bos_id=5, eos_id=6, init_std=0.3)
    model = GIT.from_config(cfg).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values, torch.tensor([[5]]))[0, -1]
    n = 4000
    out = model.generate(pixel_values.expand(n, -1, -1, -1), max_new_tokens=1, do_sample=True, temperature=1.5,
                         generator=torch.Generator().manual_seed(0))[:, 1]
    freq = torch.bincount(out, minlength=8).float() / n
    expected = (logits / 1.5).softmax(-1)
    assert (freq - expected).abs().max() < 0.03
    top_p = model.generate(pixel_values.expand(500, -1, -1, -1), max_new_tokens=1, do_sample=True, top_p=0.5,
                           generator=torch.Generator().manual_seed(0))[:, 1]
    ranked = expected.argsort(descending=True)
    nucleus = ranked[: int((expected[ranked].cumsum(0) < 0.5).sum()) + 1]
    assert set(top_p.tolist()) <= set(nucleus.tolist())


def test_classify_picks_the_most_likely_allowed_answer(model: GIT) -> None:
    answers = [[5], [5, 6], [7, 8, 9], [10, 11], [12]]
    pixel_values = torch.randn(3, 3, 32, 32)
    choices = model.classify(pixel_values, answers, num_beams=8)  # wide enough to be exhaustive here
    with torch.no_grad():
        for img, choice in enumerate(choices):
            scores = []
            for a in answers:
                logp = model(pixel_values[img:img + 1], torch.tensor([[1, *a, 2]]))[0].log_softmax(-1)
                targets = torch.tensor([*a, 2])
                scores.append(logp[torch.arange(len(targets)), targets].sum().item())
            assert choice.index == max(range(len(answers)), key=scores.__getitem__)
            assert choice.score == pytest.approx(scores[choice.index], abs=1e-4)
    greedy = model.classify(pixel_values, answers)
    assert all(0 <= c.index < len(answers) for c in greedy)


def test_generation_errors_are_one_line(model: GIT) -> None:
    pixel_values = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="exceeds the model's 64 text positions"):
        model.generate(pixel_values, torch.ones(1, 60, dtype=torch.long), max_new_tokens=10)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(pixel_values, torch.ones(1, 3, dtype=torch.long), torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(pixel_values, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="5-D"):
        model.generate(torch.randn(1, 2, 3, 32, 32))


def test_answer_and_pixel_value_mistakes_are_one_line(model: GIT) -> None:
    pixel_values = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.answer(pixel_values, [torch.tensor([1, 5])], max_new_tokens=3),
                       model.answer(pixel_values, [[1, 5]], max_new_tokens=3))  # a tensor row is its ids
    cases = [
        ((pixel_values, [1, 5, 6]), "questions is one prompt [1, 5, 6]; pass a list of prompts"),
        ((pixel_values, []), "needs at least one question"),
        ((pixel_values, [[1, 5], []]), "needs at least one question"),
        ((pixel_values, torch.ones(2, 3, dtype=torch.long)), "needs at least one question"),
        (((pixel_values * 255).clamp(0, 255).to(torch.uint8), [[1]]),
         "pixel_values is uint8 (raw pixels); pass them through ImageProcessor, which rescales and normalises them"),
        (({"pixel_values": pixel_values}, [[1]]), "pixel_values is a dict, not a tensor; pass inputs['pixel_values']"),
    ]
    for args, needle in cases:
        with pytest.raises(ValueError) as error:
            model.answer(*args)
        assert needle in str(error.value) and "\n" not in str(error.value), str(error.value)
    raw = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    for call in (lambda: model(raw, torch.ones(1, 2, dtype=torch.long)), lambda: model.generate(raw)):
        with pytest.raises(ValueError, match=r"pixel_values is uint8 \(raw pixels\)"):
            call()
