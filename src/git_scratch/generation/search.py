"""Decoding: greedy, sampling and beam search over the image prefix and its cache (prefix.py).

Semantics follow transformers' `generate` (greedy, multinomial sampling, beam search) so the
tokens are identical; tests/parity/test_generate_parity.py checks that. Arguments are checked
before any work: a bad one costs no vision work.

Letters: B images, K beams or returned sequences per image, R = B*K rows, T0 prompt length,
T = T0 + max_new_tokens, N image tokens, V vocab.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..config import GitConfig
from ..model.git import GIT, check_pixel_values, text_mask_for
from . import processors
from .prefix import DecodeState, ImagePrefix, decode_step, empty_prefix, encode_prefix, prefill, reorder_beams
from .processors import Processor

# --- logits processing (transformers' order: repetition penalty, n-gram ban, bad words, min
# length, the caller's constraint, then the sampling warpers temperature, top-k, top-p) ---------


def make_processor(n_prompt: int, *, eos_id: int, min_new_tokens: int = 0, sample: bool = False,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   min_keep: int = 1, constraint: Processor | None = None, repetition_penalty: float = 1.0,
                   prompt_pads: torch.Tensor | None = None, no_repeat_ngram_size: int = 0,
                   bad_words_ids: list[list[int]] | None = None, vocab_size: int | None = None) -> Processor:
    """One Processor for a whole `generate` call; the processors of processors.py run first, in
    the order transformers' `_get_logits_processor` appends them (their defaults switch them off)."""
    first: list[Processor] = []
    if repetition_penalty != 1.0:
        first.append(processors.repetition_penalty(repetition_penalty, prompt_pads))
    if no_repeat_ngram_size != 0:
        first.append(processors.no_repeat_ngram(no_repeat_ngram_size))
    if bad_words_ids is not None:
        first.append(processors.bad_words(bad_words_ids, eos_id=eos_id, vocab_size=vocab_size))

    def process(sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in first:
            scores = processor(sequences, scores)
        if sequences.shape[1] - n_prompt < min_new_tokens:
            scores = scores.clone()
            scores[:, eos_id] = -float("inf")
        if constraint is not None:  # where transformers runs prefix_allowed_tokens_fn
            scores = constraint(sequences, scores)
        if not sample:
            return scores
        if temperature != 1.0:
            scores = scores / temperature
        if top_k:
            kth = torch.topk(scores, min(max(top_k, min_keep), scores.shape[-1])).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if top_p is not None and top_p < 1.0:
            ascending, order = torch.sort(scores)
            drop = ascending.softmax(-1).cumsum(-1) <= 1 - top_p  # the low tail holding 1 - top_p
            drop[:, -min_keep:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
        return scores

    return process


# --- the loops -------------------------------------------------------------------------------


def greedy_or_sample(model: GIT, state: DecodeState, logits: torch.Tensor, input_ids: torch.Tensor,
                     process: Processor, *, max_new_tokens: int, eos_id: int, pad_id: int,
                     sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    sequences = input_ids
    finished = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    n_prompt = input_ids.shape[1]
    for step in range(max_new_tokens):
        scores = process(sequences, logits)
        if sample:
            token = torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
        else:
            token = scores.argmax(-1)
        token = token.masked_fill(finished, pad_id)  # finished rows are padded, as transformers does
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        finished |= token == eos_id
        if finished.all() or step == max_new_tokens - 1:
            break
        logits = decode_step(model, state, token[:, None], n_prompt + step)
    return sequences


def beam_search(model: GIT, state: DecodeState, logits: torch.Tensor, input_ids: torch.Tensor,
                process: Processor, *, num_beams: int, max_new_tokens: int, eos_id: int, fill_id: int,
                length_penalty: float, early_stopping: bool | str, num_return_sequences: int,
                sample: bool = False, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' vectorised beam search, step for step, over our cache. Returns the best
    `num_return_sequences` hypotheses per image, (B * n, T0 + generated), and their scores."""
    rows, n_prompt = input_ids.shape
    batch, k, device = rows // num_beams, num_beams, input_ids.device
    n_keep = 2 * k  # candidates per step: enough that k survive even if k of them end now
    max_len = n_prompt + max_new_tokens
    running = torch.full((batch, k, max_len), fill_id, dtype=torch.long, device=device)
    running[:, :, :n_prompt] = input_ids.view(batch, k, n_prompt)
    finished_seqs = running.clone()
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = -1e9  # all beams start equal: let only the first one expand
    finished_scores = torch.full((batch, k), -1e9, device=device)
    finished_lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    is_finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    first_k = torch.arange(n_keep, device=device) < k

    for cur_len in range(n_prompt, max_len):
        # a. candidates: every beam times every token, scored by accumulated log-probability
        log_probs = process(running[:, :, :cur_len].flatten(0, 1), F.log_softmax(logits, dim=-1))
        totals = (log_probs.view(batch, k, -1) + running_scores[:, :, None]).flatten(1)  # (B, K*V)
        if sample:
            # 2K draws without replacement from the accumulated scores, then sorted best first as
            # transformers does: step b's topk and the first-K finished test read that order
            top_idx = torch.multinomial(totals.softmax(-1), n_keep, generator=generator)
            top_scores, order = totals.gather(1, top_idx).sort(dim=-1, descending=True)
            top_idx = top_idx.gather(1, order)
        else:
            top_scores, top_idx = torch.topk(totals, n_keep)  # (B, 2K)
        vocab = logits.shape[-1]
        src_beam, token = top_idx // vocab, top_idx % vocab
        cand = running.gather(1, src_beam[:, :, None].expand(-1, -1, max_len)).clone()
        cand[:, :, cur_len] = token
        ends = (token == eos_id) | (cur_len + 1 >= max_len)  # (B, 2K)

        # b. the k best candidates that did not end keep running
        alive_scores = top_scores - 1e9 * ends.float()
        keep = torch.topk(alive_scores, k).indices
        running = cand.gather(1, keep[:, :, None].expand(-1, -1, max_len))
        running_scores = alive_scores.gather(1, keep)
        parent = src_beam.gather(1, keep)  # (B, K): which old beam each new one extends

        # c. candidates that ended among the top k join the finished pool if good enough
        just_done = ends & first_k
        done_scores = top_scores / ((cur_len + 1 - n_prompt) ** length_penalty)
        full = is_finished.all(-1, keepdim=True) & (early_stopping is True)
        done_scores = done_scores - 1e9 * (full | ~can_improve | ~just_done).float()
        pool_scores = torch.cat([finished_scores, done_scores], dim=1)
        best = torch.topk(pool_scores, k).indices
        finished_scores = pool_scores.gather(1, best)
        finished_seqs = torch.cat([finished_seqs, cand], 1).gather(1, best[:, :, None].expand(-1, -1, max_len))
        new_lengths = torch.full_like(done_scores, cur_len + 1 - n_prompt, dtype=torch.long)
        finished_lengths = torch.cat([finished_lengths, new_lengths], 1).gather(1, best)
        is_finished = torch.cat([is_finished, just_done], 1).gather(1, best)

        # d. stop when no running beam can beat the finished ones (transformers' heuristic)
        best_len = max_len - n_prompt if early_stopping == "never" and length_penalty > 0 else cur_len + 1 - n_prompt
        best_running = running_scores[:, :1] / (best_len ** length_penalty)
        worst_done = torch.where(is_finished, finished_scores.min(-1, keepdim=True).values, -1e9)
        can_improve = can_improve & (best_running > worst_done).any(-1, keepdim=True)
        all_full = is_finished.all() & (early_stopping is True)
        if not can_improve.any() or all_full or ends.all():
            break
        rows_from = (parent + torch.arange(batch, device=device)[:, None] * k).flatten()
        reorder_beams(state, rows_from, cur_len)  # text slots written so far: 0 .. cur_len-1
        logits = decode_step(model, state, running[:, :, cur_len].reshape(-1, 1), cur_len)

    n = num_return_sequences
    out_len = n_prompt + int(finished_lengths[:, :n].max())
    return finished_seqs[:, :n, :out_len].flatten(0, 1), finished_scores[:, :n].flatten()


# --- the entry points ------------------------------------------------------------------------


@torch.no_grad()
def generate(model: GIT, pixel_values: torch.Tensor | None, input_ids: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, *, max_new_tokens: int = 20,
             min_new_tokens: int = 0, num_beams: int = 1, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = 50, top_p: float | None = None,
             length_penalty: float = 1.0, early_stopping: bool | str = False,
             num_return_sequences: int = 1, generator: torch.Generator | None = None,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             bad_words_ids: list[list[int]] | None = None, constraint: Processor | None = None,
             prefix: ImagePrefix | None = None, image_index: torch.Tensor | None = None,
             ) -> torch.Tensor:
    """Token ids (B * num_return_sequences, prompt + new), the prompt included, exactly as
    transformers' `generate` returns them. `input_ids=None` means the prompt `[bos]`; batched
    prompts are left-padded with `attention_mask`. The image prefix is computed once per image
    and shared by all beams and returned sequences (prefix.py); `prefix`/`image_index` let a
    caller reuse one for many prompts (`answer`). `pixel_values=None` decodes text alone, as
    transformers does: zero image tokens.

    Logits processors, off by default, with transformers' meaning (processors.py): `repetition_penalty`
    (> 1 discourages every token already in the row, prompt included, pads not), `no_repeat_ngram_size`
    (no n-gram twice, prompt and pads included), `bad_words_ids` (token-id sequences never generated).
    `constraint` is one's own Processor, `(sequences (R, t), scores (R, V)) -> scores`, run after
    them and before the sampling warpers; constrain.py's answer trie is one."""
    cfg = model.cfg
    device = model.lm_head.weight.device
    if prefix is None and pixel_values is None:
        prefix = empty_prefix(model)  # one image-less prefix, shared by all prompts
    n_images = prefix.keys[0].shape[0] if prefix is not None else pixel_values.shape[0]
    if input_ids is None:
        input_ids = torch.full((n_images, 1), cfg.bos_id, dtype=torch.long, device=device)
    check_generation_inputs(cfg, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                          min_new_tokens=min_new_tokens, num_beams=num_beams, do_sample=do_sample,
                          num_return_sequences=num_return_sequences, temperature=temperature, top_p=top_p)
    input_ids = input_ids.to(device)
    attention_mask = text_mask_for(input_ids, attention_mask).to(device)
    if image_index is None:
        if n_images not in (1, len(input_ids)):
            raise ValueError(f"{n_images} images but {len(input_ids)} prompts; give one image per prompt, or one for all")
        image_index = torch.arange(len(input_ids), device=device) % n_images
    per_row = num_beams if num_beams > 1 else num_return_sequences
    image_index = image_index.repeat_interleave(per_row)
    input_ids = input_ids.repeat_interleave(per_row, dim=0)  # rows of one prompt stay adjacent
    attention_mask = attention_mask.repeat_interleave(per_row, dim=0)
    # built before the image is encoded, so a bad processor argument costs no vision work
    process = make_processor(input_ids.shape[1], eos_id=cfg.eos_id, min_new_tokens=min_new_tokens,
                             sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_keep=2 if num_beams > 1 else 1, constraint=constraint,
                             repetition_penalty=repetition_penalty, prompt_pads=attention_mask.int().argmax(-1),
                             no_repeat_ngram_size=no_repeat_ngram_size, bad_words_ids=bad_words_ids,
                             vocab_size=cfg.vocab_size)
    if prefix is None:
        prefix = encode_prefix(model, pixel_values.to(device))
    state, logits = prefill(model, prefix, image_index, input_ids, attention_mask, max_new_tokens)
    if num_beams == 1:
        return greedy_or_sample(model, state, logits, input_ids, process, max_new_tokens=max_new_tokens,
                                eos_id=cfg.eos_id, pad_id=cfg.pad_id, sample=do_sample, generator=generator)
    # transformers fills unused beam slots with `pad_token_id or eos_token_id`: pad id 0 (GIT's)
    # is falsy there, so GIT's beams end in EOS tokens. Matching that keeps outputs identical.
    fill_id = cfg.pad_id or cfg.eos_id
    sequences, _ = beam_search(model, state, logits, input_ids, process, num_beams=num_beams,
                               max_new_tokens=max_new_tokens, eos_id=cfg.eos_id, fill_id=fill_id,
                               length_penalty=length_penalty, early_stopping=early_stopping,
                               num_return_sequences=num_return_sequences, sample=do_sample,
                               generator=generator)
    return sequences


@torch.no_grad()
def answer(model: GIT, pixel_values: torch.Tensor, questions: list[list[int]], **generate_kwargs: Any) -> torch.Tensor:
    """Every question about every image in one batched call that encodes each image once.

    `questions` are prompts as token ids, `[bos] + question tokens` (tokenizer.prompt_ids). With
    B images (or videos) and Q questions the rows are image-major: row b * Q + q answers question
    q about image b (its num_return_sequences rows adjacent); B = 1 is Q questions about one
    image. For one question per image, call it per image or use generate with batch_prompts.
    Returns the generated ids alone, (B * Q * num_return_sequences, new) long: left-aligned,
    the prompt removed, each row's first EOS kept and pad_id after it, so
    `tokenizer.decode_answer(row)` reads a row and `tokenizer.batch_decode(ids)` all of them."""
    check_pixel_values(pixel_values, model.cfg)
    prompts = _prompt_lists(questions)
    longest = max(len(q) for q in prompts)
    device = model.lm_head.weight.device
    input_ids = torch.full((len(prompts), longest), model.cfg.pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros_like(input_ids)
    for row, q in enumerate(prompts):
        input_ids[row, longest - len(q):] = torch.tensor(q, dtype=torch.long)
        attention_mask[row, longest - len(q):] = 1
    n_images = pixel_values.shape[0]
    input_ids, attention_mask = input_ids.repeat(n_images, 1), attention_mask.repeat(n_images, 1)  # (B*Q, T0)
    image_index = torch.arange(n_images, device=device).repeat_interleave(len(prompts))  # image-major
    sequences = generate(model, pixel_values, input_ids, attention_mask, image_index=image_index, **generate_kwargs)
    return pad_after_eos(sequences[:, longest:], model.cfg.eos_id, model.cfg.pad_id)


def _prompt_lists(questions: Any) -> list[list[int]]:
    """Prompts as lists of ints; a tensor row (tokenizer(..., return_tensors="pt")) is taken as its ids."""
    if isinstance(questions, (list, tuple)) and questions and all(isinstance(q, int) for q in questions):
        raise ValueError(f"questions is one prompt {list(questions)[:8]}; pass a list of prompts, "
                         "e.g. [tokenizer.prompt_ids(q) for q in texts]")
    if not isinstance(questions, (list, tuple)) or not questions:
        raise ValueError("answer() needs at least one question, each at least [bos]")
    prompts = [q.tolist() if isinstance(q, torch.Tensor) and q.dim() == 1 else q for q in questions]
    if not all(isinstance(q, (list, tuple)) and q and all(isinstance(t, int) for t in q) for q in prompts):
        raise ValueError("answer() needs at least one question, each at least [bos]")
    return [list(q) for q in prompts]


def pad_after_eos(ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """(R, new) -> the same with every token after a row's first EOS set to pad_id (greedy pads
    finished rows with pad, beam search with EOS: one convention for readers of answer())."""
    is_eos = (ids == eos_id).long()
    after_first = (is_eos.cumsum(-1) - is_eos) > 0  # (R, new): an EOS came strictly before
    return ids.masked_fill(after_first, pad_id)


def check_generation_inputs(cfg: GitConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                          max_new_tokens: int = 20, min_new_tokens: int = 0, num_beams: int = 1,
                          do_sample: bool = False, num_return_sequences: int = 1, temperature: float = 1.0,
                          top_p: float | None = None) -> None:
    """One-line errors before any work is done, so a prompt too long for the position table (or
    any bad argument) costs no vision work. Defaults are `generate`'s."""
    counts = {"max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens, "num_beams": num_beams,
              "num_return_sequences": num_return_sequences}
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} = {value!r} must be an integer")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected (B, T) with T >= 1, "
                         "each row at least [bos]")
    text_mask = text_mask_for(input_ids, attention_mask)
    empty = (~text_mask.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"row {empty[0]} of attention_mask is all padding; every prompt needs at least its "
                         "[bos] token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens = {max_new_tokens} must be at least 1")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens = {min_new_tokens} must be between 0 and max_new_tokens = {max_new_tokens}")
    if num_beams < 1 or num_return_sequences < 1:
        raise ValueError(f"num_beams = {num_beams} and num_return_sequences = {num_return_sequences} must be >= 1")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences = {num_return_sequences} cannot exceed num_beams = {num_beams}")
    if num_beams == 1 and num_return_sequences > 1 and not do_sample:
        raise ValueError("num_return_sequences > 1 needs num_beams >= num_return_sequences or do_sample=True")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature = {temperature} must be > 0 when sampling")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p = {top_p} must be in (0, 1]")
    if not text_mask[:, -1].all():
        raise ValueError("prompts must be left-padded: every row's last attention_mask entry must be 1")
    longest = int(text_mask.sum(-1).max())
    if longest + max_new_tokens > cfg.max_positions:
        raise ValueError(f"a prompt of {longest} tokens plus max_new_tokens = {max_new_tokens} exceeds the "
                         f"model's {cfg.max_positions} text positions; shorten the prompt or lower max_new_tokens")
