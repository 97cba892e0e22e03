"""Multinomial sampling: draw each row's next token from the softmax of its processed scores."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch

from ..processors import LogitsProcessorList
from ..runner import ModelRunner
from ..seeding import seeded_multinomial
from .state import SequenceState


def multinomial(scores: torch.FloatTensor) -> torch.LongTensor:
    """One draw per row from ``softmax(scores)`` with the global torch RNG, as the reference draws.

    ``scores``: ``[rows, vocab]`` float32 -> ``[rows]`` int64. One call for the whole batch, finished
    rows included, so the random stream advances exactly as in ``model.generate``.
    """
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def row_seeds(seed: Any, rows: int) -> Optional[list[int]]:
    """The per-row seeds of ``generate(seed=...)`` for ``rows = batch * num_return_sequences`` rows.

    ``None`` -> None (torch's global generator, as the reference). An int ``s`` -> ``[s, s+1, ...,
    s+rows-1]``: row ``r`` uses ``s + r``. A list -> itself, one seed per expanded row (the
    ``num_return_sequences`` copies of prompt ``b`` are rows ``b*n .. b*n+n-1``).

    Raises:
        ValueError: ``seed`` is not an int >= 0 or a list of ``rows`` ints >= 0.
    """
    def ok(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0

    if seed is None:
        return None
    if ok(seed):
        return [int(seed) + row for row in range(rows)]
    if isinstance(seed, (list, tuple)) and all(ok(s) for s in seed):
        if len(seed) != rows:
            raise ValueError(f"`seed` has {len(seed)} seeds but the batch has {rows} rows (batch size * "
                             "num_return_sequences); give one seed per row, or one int for all.")
        return [int(s) for s in seed]
    raise ValueError(f"`seed` must be an int >= 0 or a list of ints >= 0 (one per row), but is {seed!r}.")


def seeded_draw(seeds: list[int], state: SequenceState) -> Callable[[torch.FloatTensor], torch.LongTensor]:
    """A draw for :func:`sample` keyed by ``(seeds[r], step)``, ``step`` being the new token's index in its row.

    Each row's token depends only on its own scores, seed and step: not on the other rows, on
    padding, or on how many random numbers anything else consumed.
    """
    def draw(scores: torch.FloatTensor) -> torch.LongTensor:
        step = state.length - state.prompt_length           # a Python int: no host sync
        return seeded_multinomial(torch.softmax(scores, dim=-1), seeds, [step] * len(seeds))
    return draw


def sample(runner: ModelRunner, prompt_ids, processors: LogitsProcessorList, state: SequenceState,
           draw: Callable[[torch.FloatTensor], torch.LongTensor] = multinomial) -> SequenceState:
    """Run sampling until every row is done.

    Args:
        runner: drives the model (prefill, then one token per row per step).
        prompt_ids: ``[rows, prompt_len]`` int64.
        processors: the pipeline (warpers included) applied to the float32 logits; stateful ones
            get ``reset()`` before the prefill and ``accept(tokens)`` after each step.
        state: sequences, done flags, streaming; returned when every row is done.
        draw: turns processed scores ``[rows, vocab]`` into tokens ``[rows]`` (:func:`multinomial`,
            or :func:`seeded_draw` with ``seed=``).
    """
    processors.reset()
    logits = runner.prefill(prompt_ids)                     # [rows, vocab] float32
    while True:
        scores = processors(state.sequences, logits)
        state.record(logits, scores, runner.last_output)
        tokens = state.append(draw(scores))                 # finished rows get pad
        processors.accept(tokens)
        if state.done:
            return state
        logits = runner.step(tokens)
