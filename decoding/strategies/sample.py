"""Multinomial sampling: draw each row's next token from the softmax of its processed scores."""

from __future__ import annotations

from typing import Callable

import torch

from ..processors import LogitsProcessorList
from ..runner import ModelRunner
from .state import SequenceState


def multinomial(scores: torch.FloatTensor) -> torch.LongTensor:
    """One draw per row from ``softmax(scores)`` with the global torch RNG, as the reference draws.

    ``scores``: ``[rows, vocab]`` float32 -> ``[rows]`` int64. One call for the whole batch, finished
    rows included, so the random stream advances exactly as in ``model.generate``.
    """
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def sample(runner: ModelRunner, prompt_ids, processors: LogitsProcessorList, state: SequenceState,
           draw: Callable[[torch.FloatTensor], torch.LongTensor] = multinomial) -> SequenceState:
    """Run sampling until every row is done.

    Args:
        runner: drives the model (prefill, then one token per row per step).
        prompt_ids: ``[rows, prompt_len]`` int64.
        processors: the pipeline (warpers included) applied to the float32 logits.
        state: sequences, done flags, streaming; returned when every row is done.
        draw: turns processed scores ``[rows, vocab]`` into tokens ``[rows]``.
    """
    logits = runner.prefill(prompt_ids)                     # [rows, vocab] float32
    while True:
        scores = processors(state.sequences, logits)
        state.record(logits, scores, runner.last_output)
        tokens = state.append(draw(scores))                 # finished rows get pad
        if state.done:
            return state
        logits = runner.step(tokens)
