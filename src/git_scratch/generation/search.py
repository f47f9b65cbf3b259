"""Decoding: greedy, sampling and beam search over the image prefix and its cache (prefix.py).

Semantics follow transformers' `generate` (greedy, multinomial sampling, beam search) so the
tokens are identical; tests/parity/test_generate_parity.py checks that. Arguments are checked
before any work: a bad one costs no vision work.

The file runs over 400 lines because `generate` is one contract with transformers' read together:
its arguments and their checks, the processor chain, the three loops, and the rules table that says
whose decoding the loops reproduce (`semantics`): a generation of transformers' beam search, or
Microsoft's original GenerativeImage2Text (greedy with its repeat ban, its beam search), one row each.

Letters: B images, K beams or returned sequences per image, R = B*K rows, T0 prompt length,
T = T0 + max_new_tokens, N image tokens, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import GitConfig
from ..model.git import GIT, check_pixel_values, text_mask_for
from . import processors
from .outputs import GenerateOutput
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


# --- beam search rules: one row per decoder reproduced (transformers' generations, the original's) --


def power_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor | float:
    """transformers' length normalisation, every generation: score = sum log p / length ** alpha.
    A length 0 (BeamSearchScorer's first-step EOS without prompt) gives 0 or inf, never an exception."""
    if isinstance(length, torch.Tensor):
        return length.float() ** alpha
    return float(length) ** alpha if length or alpha >= 0 else math.inf


def gnmt_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor | float:
    """The original GIT's normalisation (OpenNMT's, from GNMT): score = sum log p / ((5 + length) / 6) ** alpha."""
    if isinstance(length, torch.Tensor):
        return ((5 + length.float()) / 6) ** alpha
    return ((5 + length) / 6) ** alpha


@dataclass(frozen=True)
class BeamRules:
    """What a decoder counts, one field per measured difference (docs/generation.md). `beam_search`
    and `greedy_or_sample` are one loop each; these only change their arithmetic.

    A hypothesis' length, for the length penalty, is its generated tokens, minus the closing EOS
    unless `counts_eos`, plus the prompt's width if `counts_prompt`. `denominator(length, alpha)`
    turns it into the normaliser. The "is done" test compares the worst finished score with the best
    running score (`done_against="running"`: the best beam still running after the step) or the best
    of the step's 2K candidates, EOS ones included (`"candidates"`: BeamSearchScorer), each normalised
    at the length an EOS hypothesis of that step has (`done_length="step"`; early_stopping="never" with
    alpha > 0, or `"longest"`: the length a hypothesis reaching max length has). At max length either
    the top K candidates of the last step end there, like EOS ones (`max_length_ends="candidates"`), or
    the K beams still running after it join the finished pool (`"running"`: BeamSearchScorer.finalize),
    or every candidate ends with its last token replaced by EOS (`"eos"`). The pool keeps `kept`
    hypotheses per image (None: K), a new one entering only if strictly better; EOS candidates finish
    when ranked among the step's top K. (The original offers every EOS ranked before the K-th candidate
    that runs on, and tests "done" before a step's hypotheses join: with one kept hypothesis neither
    changes a token, docs/generation.md says why.) After a returned hypothesis' EOS come EOS tokens
    (`eos_fill`, both searches),
    `pad_id or eos_id` (`fill_pad_or_eos`, the vectorised search's fill: GIT's pad id 0 is falsy, so
    EOS tokens) or pad tokens; `full_width` returns every row at prompt + max_new_tokens, else cut after
    the longest returned hypothesis. Greedy: with `bans_last_token` each step after the first ranks the
    log-softmax of the logits with the token just generated set to -10000."""

    counts_eos: bool
    counts_prompt: bool
    done_against: str  # "running" | "candidates"
    max_length_ends: str  # "candidates" | "running" | "eos"
    fill_pad_or_eos: bool
    denominator: Callable[[torch.Tensor | int, float], torch.Tensor | float] = power_penalty
    done_length: str = "step"  # "step" | "longest"
    kept: int | None = None
    eos_fill: bool = False
    full_width: bool = False
    bans_last_token: bool = False

    def length(self, n_generated: int, n_prompt: int, *, eos: torch.Tensor | bool) -> torch.Tensor | int:
        """The length penalised for a hypothesis of `n_generated` tokens, ending in EOS where `eos`
        (a Python int wherever it is the same for every candidate)."""
        dropped = 0 if self.counts_eos else eos.long() if isinstance(eos, torch.Tensor) else int(eos)
        return n_generated - dropped + (n_prompt if self.counts_prompt else 0)


SEMANTICS: dict[str, BeamRules] = {
    # transformers >= 4.50 (vectorised beam search; 5.24 installed), measured by tests/parity
    "transformers": BeamRules(counts_eos=True, counts_prompt=False, done_against="running",
                              max_length_ends="candidates", fill_pad_or_eos=True),
    # BeamSearchScorer and BeamHypotheses, 4.36 to 4.49 (4.49 measured; 4.36 took the prompt out
    # of the length and put the EOS in)
    "transformers<4.50": BeamRules(counts_eos=True, counts_prompt=False, done_against="candidates",
                                   max_length_ends="running", fill_pad_or_eos=False),
    # the same scorer up to 4.28: the length is the whole row but the EOS, prompt included (4.26
    # measured). 4.29 to 4.35 (the done test one token longer than the hypotheses) is not a row.
    "transformers<4.29": BeamRules(counts_eos=False, counts_prompt=True, done_against="candidates",
                                   max_length_ends="running", fill_pad_or_eos=False),
    # Microsoft's GenerativeImage2Text (commit faae4fb, layers/decoder.py): GeneratorWithBeamSearch with
    # one kept hypothesis, AutoRegressiveBeamSearch's greedy (beam 1), measured by tests/original
    "original": BeamRules(counts_eos=False, counts_prompt=True, done_against="candidates", max_length_ends="eos",
                          fill_pad_or_eos=True, denominator=gnmt_penalty, done_length="longest", kept=1, eos_fill=True,
                          full_width=True, bans_last_token=True),
}


def beam_rules(semantics: str) -> BeamRules:
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics = {semantics!r} is not one of {', '.join(map(repr, SEMANTICS))}; "
                         "pick the decoding rules of the implementation to reproduce")
    return SEMANTICS[semantics]


# --- what the loops run the model through ------------------------------------------------------


def parameter_device(model: GIT) -> torch.device:
    return model.lm_head.weight.device


@dataclass(frozen=True)
class Runtime:
    """The functions decoding reaches a model through: prefix.py's, over a PyTorch GIT. The loops
    and `generate` touch the model only here (and its `cfg`), so another runtime over another model
    object swaps these alone: export/decode.py runs the exported ONNX graphs through the same loops.
    encode_prefix takes `room=` (text slots to leave after the image's); a runtime may ignore it."""

    encode_prefix: Callable[..., ImagePrefix]
    empty_prefix: Callable[..., ImagePrefix]
    prefill: Callable[..., tuple[Any, torch.Tensor]]
    decode_step: Callable[..., torch.Tensor]
    reorder_beams: Callable[..., None]
    device: Callable[..., torch.device] = parameter_device


TORCH = Runtime(encode_prefix, empty_prefix, prefill, decode_step, reorder_beams)


# --- the loops -------------------------------------------------------------------------------


def greedy_or_sample(model: GIT, state: DecodeState, logits: torch.Tensor, input_ids: torch.Tensor,
                     process: Processor, *, max_new_tokens: int, eos_id: int, pad_id: int,
                     sample: bool, generator: torch.Generator | None,
                     kept_scores: list[torch.Tensor] | None = None, kept_logits: list[torch.Tensor] | None = None,
                     rules: BeamRules = SEMANTICS["transformers"], runtime: Runtime = TORCH,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (R, T0 + new), and under `rules.bans_last_token` the original's per-row score (R,)
    (else None): the sum of the ranked scores of the chosen tokens over the row's tokens that are not
    EOS, plus one if it ended, minus the prompt (at least 1). `kept_scores` / `kept_logits`, when given,
    receive each step's processed scores / raw logits (R, V)."""
    sequences = input_ids
    finished = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    n_prompt = input_ids.shape[1]
    fill_id = eos_id if rules.eos_fill else pad_id  # transformers pads finished rows, the original repeats EOS
    total = torch.zeros(len(input_ids), device=logits.device) if rules.bans_last_token else None
    for step in range(max_new_tokens):
        if kept_logits is not None:
            kept_logits.append(logits)
        if rules.bans_last_token:  # the original: no token twice in a row (the prompt's last may come first)
            banned = logits.scatter(1, sequences[:, -1:], -10000.0) if step else logits
            logits = F.log_softmax(banned, dim=-1)
        scores = process(sequences, logits)
        if kept_scores is not None:
            kept_scores.append(scores)
        if sample:
            token = torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
        else:
            token = scores.argmax(-1)
        token = token.masked_fill(finished, fill_id)
        if total is not None:  # a row that ended scores 0 (the original forces EOS with log-probability 0)
            total += scores.gather(1, token[:, None])[:, 0].masked_fill(finished, 0.0)
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        finished |= token == eos_id
        if finished.all() or step == max_new_tokens - 1:
            break
        logits = runtime.decode_step(model, state, token[:, None], n_prompt + step)
    if total is None:
        return sequences, None
    n_valid = (sequences != eos_id).sum(-1) + (sequences == eos_id).any(-1) - n_prompt
    return sequences, total / n_valid.clamp(min=1)


def beam_search(model: GIT, state: DecodeState, logits: torch.Tensor, input_ids: torch.Tensor,
                process: Processor, *, num_beams: int, max_new_tokens: int, eos_id: int, pad_id: int,
                length_penalty: float, early_stopping: bool | str, num_return_sequences: int,
                sample: bool = False, generator: torch.Generator | None = None,
                rules: BeamRules = SEMANTICS["transformers"], kept_scores: list[torch.Tensor] | None = None,
                kept_logits: list[torch.Tensor] | None = None, track_beams: bool = False,
                runtime: Runtime = TORCH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """transformers' beam search, step for step, over our cache, under `rules` (the vectorised
    search of transformers >= 4.50 by default). Returns the best `num_return_sequences` hypotheses
    per image, (B * n, T0 + generated), their scores (B * n,), and with `track_beams` the row each
    of their tokens was chosen from, (B * n, generated) with -1 after a hypothesis ended (else None).
    `kept_scores` / `kept_logits` receive each step's processed log-probs / raw logits (B * K, V)."""
    rows, n_prompt = input_ids.shape
    batch, k, device = rows // num_beams, num_beams, input_ids.device
    n_keep = 2 * k  # candidates per step: enough that k survive even if k of them end now
    max_len = n_prompt + max_new_tokens
    fill_id = eos_id if rules.eos_fill else (pad_id or eos_id) if rules.fill_pad_or_eos else pad_id
    n_slots = rules.kept or k  # finished hypotheses kept per image
    running = torch.full((batch, k, max_len), fill_id, dtype=torch.long, device=device)
    running[:, :, :n_prompt] = input_ids.view(batch, k, n_prompt)
    finished_seqs = running[:, :n_slots].clone()
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = -1e9  # all beams start equal: let only the first one expand
    finished_scores = torch.full((batch, n_slots), -1e9, device=device)
    finished_lengths = torch.zeros(batch, n_slots, dtype=torch.long, device=device)
    is_finished = torch.zeros(batch, n_slots, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    first_k = torch.arange(n_keep, device=device) < k
    # which row chose each token (b * K + beam), -1 where none was chosen: only when asked for
    running_from = torch.full((batch, k, max_new_tokens), -1, dtype=torch.long, device=device) if track_beams else None
    finished_from = running_from[:, :n_slots].clone() if track_beams else None
    # a hypothesis that reaches max length (the original writes EOS in place of its last token)
    longest = rules.length(max_new_tokens, n_prompt, eos=rules.max_length_ends == "eos")

    def add_finished(scores: torch.Tensor, seqs: torch.Tensor, n_generated: int, joins: torch.Tensor,
                     came_from: torch.Tensor | None, *, eos: torch.Tensor | bool) -> None:
        """Merge hypotheses (B, M) into the pool of the best finished ones, where `joins`; the pool's
        own come first, so a new one displaces one only if strictly better."""
        nonlocal finished_scores, finished_seqs, finished_lengths, is_finished, finished_from
        normalised = scores / rules.denominator(rules.length(n_generated, n_prompt, eos=eos), length_penalty)
        full = is_finished.all(-1, keepdim=True) & (early_stopping is True)
        normalised = normalised - 1e9 * (full | ~can_improve | ~joins).float()
        pool_scores = torch.cat([finished_scores, normalised], dim=1)
        best = torch.topk(pool_scores, n_slots).indices
        finished_scores = pool_scores.gather(1, best)
        finished_seqs = torch.cat([finished_seqs, seqs], 1).gather(1, best[:, :, None].expand(-1, -1, max_len))
        new_lengths = torch.full_like(normalised, n_generated, dtype=torch.long)
        finished_lengths = torch.cat([finished_lengths, new_lengths], 1).gather(1, best)
        is_finished = torch.cat([is_finished, joins], 1).gather(1, best)
        if track_beams:
            index = best[:, :, None].expand(-1, -1, max_new_tokens)
            finished_from = torch.cat([finished_from, came_from], 1).gather(1, index)

    def may_improve(top_scores: torch.Tensor, step: int) -> torch.Tensor:
        """(B, 1): whether a row's best score, normalised as `rules` say, still beats its worst finished one."""
        best = running_scores[:, :1] if rules.done_against == "running" else top_scores[:, :1]
        at_longest = rules.done_length == "longest" or early_stopping == "never" and length_penalty > 0
        best_len = longest if at_longest else rules.length(step + 1, n_prompt, eos=True)
        best_possible = best / rules.denominator(best_len, length_penalty)
        worst_done = torch.where(is_finished, finished_scores.min(-1, keepdim=True).values, -1e9)
        beats_worst = (best_possible > worst_done).any(-1, keepdim=True)  # an open slot is a -1e9 "worst"
        if rules.done_against == "candidates":  # BeamHypotheses is never done with fewer than K, even at
            beats_worst |= ~is_finished.all(-1, keepdim=True)  # length 0, where the best score is -inf
        return beats_worst

    for cur_len in range(n_prompt, max_len):
        step, last = cur_len - n_prompt, cur_len + 1 == max_len
        # a. candidates: every beam times every token, scored by accumulated log-probability
        log_probs = process(running[:, :, :cur_len].flatten(0, 1), F.log_softmax(logits, dim=-1))
        if kept_scores is not None:
            kept_scores.append(log_probs)
        if kept_logits is not None:
            kept_logits.append(logits)
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
        if last and rules.max_length_ends == "eos":  # the original ends every candidate, EOS for its last token
            token = torch.full_like(token, eos_id)
        cand = running.gather(1, src_beam[:, :, None].expand(-1, -1, max_len)).clone()
        cand[:, :, cur_len] = token
        cand_from = None
        if track_beams:
            cand_from = running_from.gather(1, src_beam[:, :, None].expand(-1, -1, max_new_tokens)).clone()
            cand_from[:, :, step] = src_beam + torch.arange(batch, device=device)[:, None] * k
        ends = token == eos_id  # (B, 2K)
        if last and rules.max_length_ends == "candidates":
            ends = torch.ones_like(ends)

        # b. the k best candidates that did not end keep running
        alive_scores = top_scores - 1e9 * ends.float()
        keep = torch.topk(alive_scores, k).indices
        running = cand.gather(1, keep[:, :, None].expand(-1, -1, max_len))
        running_scores = alive_scores.gather(1, keep)
        parent = src_beam.gather(1, keep)  # (B, K): which old beam each new one extends
        if track_beams:
            running_from = cand_from.gather(1, keep[:, :, None].expand(-1, -1, max_new_tokens))

        # c. candidates that ended among the top k join the finished pool if good enough
        add_finished(top_scores, cand, step + 1, ends & first_k, cand_from, eos=token == eos_id)

        # d. stop when no running beam can beat the finished ones
        can_improve = can_improve & may_improve(top_scores, step)
        if last and rules.max_length_ends == "running":  # BeamSearchScorer.finalize
            add_finished(running_scores, running, max_new_tokens, torch.ones_like(can_improve).expand(-1, k),
                         running_from, eos=False)
        all_full = is_finished.all() & (early_stopping is True)
        if not can_improve.any() or all_full or ends.all() or last:
            break
        rows_from = (parent + torch.arange(batch, device=device)[:, None] * k).flatten()
        runtime.reorder_beams(state, rows_from, cur_len)  # text slots written so far: 0 .. cur_len-1
        logits = runtime.decode_step(model, state, running[:, :, cur_len].reshape(-1, 1), cur_len)

    n = num_return_sequences
    n_out = max_new_tokens if rules.full_width else int(finished_lengths[:, :n].max())
    came_from = finished_from[:, :n, :n_out].flatten(0, 1) if track_beams else None
    return finished_seqs[:, :n, :n_prompt + n_out].flatten(0, 1), finished_scores[:, :n].flatten(), came_from


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
             semantics: str = "transformers", return_dict_in_generate: bool = False,
             output_scores: bool = False, output_logits: bool = False, runtime: Runtime = TORCH,
             ) -> torch.Tensor | GenerateOutput:
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
    them and before the sampling warpers; constrain.py's answer trie is one.

    `return_dict_in_generate=True` returns a GenerateOutput instead (outputs.py): the sequences,
    and with `output_scores` / `output_logits` each step's processed scores / raw logits, as
    transformers names them. `semantics` picks whose rules to reproduce (SEMANTICS: "transformers",
    today's; "transformers<4.50" and "transformers<4.29", BeamSearchScorer's, greedy and sampling the
    same in these; "original", Microsoft's GenerativeImage2Text, greedy and beam search, whose
    max_steps is prompt length + max_new_tokens: its beam search returns that width, EOS-filled, and
    `sequences_scores` holds its own score, not a log-probability; docs/generation.md). `runtime` is
    what `model` runs through (Runtime; export/decode.py's ONNX_RUNTIME runs an exported model)."""
    rules = beam_rules(semantics)
    if semantics == "original":
        check_original(attention_mask, num_beams=num_beams, do_sample=do_sample, length_penalty=length_penalty,
                       early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                       min_new_tokens=min_new_tokens, repetition_penalty=repetition_penalty,
                       no_repeat_ngram_size=no_repeat_ngram_size, bad_words_ids=bad_words_ids, constraint=constraint)
    cfg = model.cfg
    device = runtime.device(model)
    if prefix is None and pixel_values is None:
        prefix = runtime.empty_prefix(model)  # one image-less prefix, shared by all prompts
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
    if prefix is None:  # one row per image: the rows decode in the prefix's caches, not in copies
        in_place = per_row == 1 and torch.equal(image_index, torch.arange(len(image_index), device=device))
        room = input_ids.shape[1] + max_new_tokens if in_place else 0
        prefix = runtime.encode_prefix(model, pixel_values.to(device), room=room)
    state, logits = runtime.prefill(model, prefix, image_index, input_ids, attention_mask, max_new_tokens)
    # per-step tensors are kept only when asked for: the default call keeps nothing
    kept_scores = [] if return_dict_in_generate and output_scores else None
    kept_logits = [] if return_dict_in_generate and output_logits else None
    sequences_scores = beam_indices = None
    if num_beams == 1:
        sequences, sequences_scores = greedy_or_sample(
            model, state, logits, input_ids, process, max_new_tokens=max_new_tokens, eos_id=cfg.eos_id,
            pad_id=cfg.pad_id, sample=do_sample, generator=generator, kept_scores=kept_scores,
            kept_logits=kept_logits, rules=rules, runtime=runtime)
    else:
        sequences, sequences_scores, beam_indices = beam_search(
            model, state, logits, input_ids, process, num_beams=num_beams, max_new_tokens=max_new_tokens,
            eos_id=cfg.eos_id, pad_id=cfg.pad_id, length_penalty=length_penalty, early_stopping=early_stopping,
            num_return_sequences=num_return_sequences, sample=do_sample, generator=generator, rules=rules,
            kept_scores=kept_scores, kept_logits=kept_logits, track_beams=return_dict_in_generate, runtime=runtime)
    if not return_dict_in_generate:
        return sequences
    return GenerateOutput(sequences=sequences, scores=None if kept_scores is None else tuple(kept_scores),
                          logits=None if kept_logits is None else tuple(kept_logits),
                          sequences_scores=sequences_scores if output_scores else None, beam_indices=beam_indices)


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
    device = generate_kwargs.get("runtime", TORCH).device(model)
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


def check_original(attention_mask: torch.Tensor | None, **settings: Any) -> None:
    """semantics="original" reproduces the original's greedy and beam search as it ran them: any other
    setting has no original behaviour to match, so it is refused (one line) rather than guessed."""
    defaults = {"do_sample": False, "early_stopping": False, "num_return_sequences": 1, "min_new_tokens": 0,
                "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "constraint": None}
    for name, default in defaults.items():
        if settings[name] != default:
            raise ValueError(f"semantics='original' does not support {name}={settings[name]!r}; leave it at "
                             f"{default!r} or use semantics='transformers'")
    if settings["num_beams"] > 1 and not settings["length_penalty"] > 0:
        raise ValueError(f"semantics='original' needs length_penalty > 0 with beams (the original asserts it), "
                         f"got {settings['length_penalty']}; the original's default is 0.6")
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise ValueError("semantics='original' decodes unpadded prompts only (the original takes one VQA prompt "
                         "at a time); pass prompts of one length without padding, or one call per prompt")


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
