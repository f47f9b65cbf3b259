"""What `generate(..., return_dict_in_generate=True)` returns, and the score of each chosen token.

Names and meanings are transformers' (GenerateDecoderOnlyOutput, GenerateBeamDecoderOnlyOutput,
`model.compute_transition_scores`), so code written against them reads ours unchanged;
tests/parity/test_generate_outputs_parity.py checks every field against transformers 5.x.

Letters: R returned rows (images x returned sequences), K beams, V vocab, S decoding steps run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class GenerateOutput:
    """`sequences` (R, prompt + new) is what `generate` returns by default. Per step, one tensor
    for each row decoded in that step (R, or images x K under beam search):
    `scores` (with output_scores) the processed scores the search ranked: logits after the
    processors and warpers under greedy and sampling, processed log-probabilities under beam search;
    `logits` (with output_logits) the model's raw logits. Beam search only: `sequences_scores` (R,)
    (with output_scores) each returned hypothesis' length-normalised score, and `beam_indices`
    (R, new), the beam row each token was chosen from (as b * K + beam), -1 after the hypothesis ended."""

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    sequences_scores: torch.Tensor | None = None
    beam_indices: torch.Tensor | None = None


def compute_transition_scores(sequences: torch.Tensor, scores: tuple[torch.Tensor, ...],
                              beam_indices: torch.Tensor | None = None,
                              normalize_logits: bool = False) -> torch.Tensor:
    """The score of every generated token, (R, new): `scores[t][row, token]` of the row that chose
    it, following `beam_indices` under beam search (greedy and sampling: row r chose from row r).
    `normalize_logits` takes a log-softmax over the vocabulary first, turning greedy or sampling
    logits into log-probabilities. Steps after a beam hypothesis ended score 0. Under beam search
    with `normalize_logits=False` a row's sum over its length, divided by length ** length_penalty,
    is its `sequences_scores`."""
    if not scores:
        raise ValueError("scores is empty; call generate with return_dict_in_generate=True, output_scores=True")
    steps = torch.stack(scores, dim=1)  # (rows decoded, S, V)
    if normalize_logits:
        steps = F.log_softmax(steps, dim=-1)
    if beam_indices is None:  # each row chose from itself at every step
        beam_indices = torch.arange(steps.shape[0], device=steps.device)[:, None].expand(-1, steps.shape[1])
    ended = beam_indices < 0  # (R, S)
    n_steps = int((~ended).sum(-1).max())  # the longest hypothesis' number of tokens
    source = beam_indices[:, :n_steps].clamp(min=0).long()  # (R, n): which decoded row chose each token
    ended = ended[:, :n_steps]
    tokens = sequences[:, sequences.shape[1] - n_steps:]  # (R, n): the last n tokens are the generated ones
    step = torch.arange(n_steps, device=steps.device)[None].expand_as(source)
    chosen = steps[source, step, tokens]  # (R, n)
    return chosen.masked_fill(ended, 0.0)
