"""Choosers: the last link of the greedy/sampling loop, ``[rows, vocab] float32 scores -> [rows] int64 tokens``.

- :func:`argmax`: greedy search (``do_sample=False``);
- :func:`multinomial`: one draw per row from ``softmax(scores)`` with torch's global generator, as
  the reference draws (``do_sample=True``);
- :func:`seeded_draw`: one draw per row from its own stream keyed by ``(seed, step)``
  (``generate(seed=...)``): a row's tokens do not depend on the rest of the batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import require_finite_scores
from ..seeding import seeded_multinomial
from .state import SequenceState

Chooser = Callable[[torch.FloatTensor], torch.LongTensor]


def argmax(scores: torch.FloatTensor) -> torch.LongTensor:
    """Greedy: the highest-scoring token of each row (``[rows, vocab]`` -> ``[rows]``; ties: the lowest id)."""
    return scores.argmax(dim=-1)


def multinomial(scores: torch.FloatTensor) -> torch.LongTensor:
    """One draw per row from ``softmax(scores)`` with the global torch RNG, as the reference draws.

    ``scores``: ``[rows, vocab]`` float32 -> ``[rows]`` int64. One call for the whole batch, finished
    rows included, so the random stream advances exactly as in ``model.generate``.
    """
    # reference quirk: finished rows draw too, so the random stream advances as the reference's.
    require_finite_scores(scores)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def seeded_draw(seeds: list[int], state: SequenceState) -> Chooser:
    """A chooser keyed by ``(seeds[r], step)``, ``step`` being the new token's index in its row.

    Each row's token depends only on its own scores, seed and step: not on the other rows, on
    padding, or on how many random numbers anything else consumed.
    """
    def draw(scores: torch.FloatTensor) -> torch.LongTensor:
        step = state.length - state.prompt_length           # a Python int: no host sync
        require_finite_scores(scores)
        return seeded_multinomial(torch.softmax(scores, dim=-1), seeds, [step] * len(seeds))
    return draw

