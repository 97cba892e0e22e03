"""Finished hypotheses kept one list at a time, as the beam scorers of transformers 4.55 keep them.

Group (diverse) beam search and constrained beam search decide which candidates finish with Python
loops over each prompt's candidates, and keep the finished ones in a small n-best list per prompt
(per prompt and group for diverse beam search). :class:`FinishedList` is that list with its
early-stopping rule; :func:`pack` turns the lists into what ``generate`` returns.

Scores are Python floats (float64), as the reference's ``.item()`` makes them: a hypothesis scores
``sum_logprobs / generated_length ** length_penalty``, where ``sum_logprobs`` is the float32 sum the
search carried and ``generated_length`` counts the new tokens, eos included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch


@dataclass
class Hypothesis:
    """One finished hypothesis.

    Attributes:
        score: its length-normalised score (float64).
        ids: ``[length]`` int64, prompt included; a hypothesis that ended on eos stops *before* the
            eos (:func:`pack` writes it back).
        beam_indices: the flat row each new token was chosen from (eos included), or None when not recorded.
    """

    score: float
    ids: torch.LongTensor
    beam_indices: Optional[tuple[int, ...]] = None


@dataclass
class FinishedList:
    """The ``size`` best finished hypotheses of one prompt (or of one group of one prompt).

    Attributes:
        size: how many places (``num_beams``, or the group's size).
        length_penalty: the exponent of the length normalisation.
        early_stopping: True, False or "never" (see docs/beam-search.md).
        max_length: the longest a sequence can get, prompt included (for ``"never"``).
        prompt_length: P, the padded prompt length.
        done: the early-stopping verdict: once True nothing is added and the prompt's rows only idle.
    """

    size: int
    length_penalty: float
    early_stopping: Union[bool, str]
    max_length: int
    prompt_length: int
    hypotheses: list[Hypothesis] = field(default_factory=list)
    worst: float = 1e9
    done: bool = False

    def add(self, ids: torch.LongTensor, sum_logprobs: float, beam_indices: Optional[tuple[int, ...]],
            generated_length: int) -> None:
        """Offer a hypothesis; it enters while there is room, or when it beats the worst one (which leaves)."""
        score = sum_logprobs / (generated_length ** self.length_penalty)
        if len(self.hypotheses) < self.size or score > self.worst:
            self.hypotheses.append(Hypothesis(score, ids, beam_indices))
            if len(self.hypotheses) > self.size:
                ranked = sorted((h.score, i) for i, h in enumerate(self.hypotheses))
                del self.hypotheses[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def can_stop(self, best_sum_logprobs: float, length: int) -> bool:
        """The early-stopping rule after a step that reached ``length`` tokens (prompt included).

        Never before ``size`` hypotheses finished; then at once with ``early_stopping=True``; else
        when the best candidate's log-prob sum, normalised at the current length (or, with ``"never"``
        and a positive length penalty, at ``max_length``), cannot beat the worst finished hypothesis.
        """
        if len(self.hypotheses) < self.size:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best = best_sum_logprobs / (self.max_length - self.prompt_length) ** self.length_penalty
        else:
            best = best_sum_logprobs / (length - self.prompt_length) ** self.length_penalty
        return self.worst >= best


@dataclass
class Packed:
    """What :func:`pack` returns: ``sequences`` ``[B * nrs, width]`` int64, ``scores`` ``[B * nrs]``
    float32, ``beam_indices`` ``[B * nrs, width - P]`` int64 (-1 past each hypothesis' end) or None,
    and ``chosen``, the returned hypotheses in row order."""

    sequences: torch.LongTensor
    scores: torch.FloatTensor
    beam_indices: Optional[torch.LongTensor]
    chosen: list[Hypothesis]


def pack(pools: list[list[Hypothesis]], num_return_sequences: int, max_length: int, prompt_length: int,
         pad: Optional[int], eos: Optional[int]) -> Packed:
    """The ``num_return_sequences`` best hypotheses of each prompt's pool, as one padded tensor.

    Each pool is ranked by score (a stable sort, the later of two equal scores first, as the
    reference pops them). The width is one more than the longest hypothesis, capped at
    ``max_length``; a shorter hypothesis gets ``eos`` right after its end and ``pad`` after that.
    """
    chosen = []
    for pool in pools:
        ranked = sorted(pool, key=lambda h: h.score)
        chosen += [ranked.pop() for _ in range(num_return_sequences)]
    lengths = [len(h.ids) for h in chosen]
    width = min(max(lengths) + 1, max_length)
    sequences = chosen[0].ids.new_full((len(chosen), width), pad if pad is not None else 0)
    with_indices = chosen[0].beam_indices is not None
    beam_indices = torch.full((len(chosen), width - prompt_length), -1, dtype=torch.long, device=sequences.device)
    for row, (hypothesis, length) in enumerate(zip(chosen, lengths)):
        sequences[row, :length] = hypothesis.ids
        if length < width:
            sequences[row, length] = eos
        if with_indices:
            steps = hypothesis.beam_indices[:width - prompt_length]
            beam_indices[row, :len(steps)] = torch.tensor(steps, dtype=torch.long, device=sequences.device)
    scores = torch.tensor([h.score for h in chosen], dtype=torch.float32, device=sequences.device)
    return Packed(sequences, scores, beam_indices if with_indices else None, chosen)
