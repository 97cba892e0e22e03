"""Greedy search: at every step take the highest-scoring token of each row."""

from __future__ import annotations

from ..processors import LogitsProcessorList
from ..runner import ModelRunner
from .state import SequenceState


def greedy_search(runner: ModelRunner, prompt_ids, processors: LogitsProcessorList,
                  state: SequenceState) -> SequenceState:
    """Run greedy decoding until every row is done.

    Args:
        runner: drives the model (prefill, then one token per row per step).
        prompt_ids: ``[rows, prompt_len]`` int64.
        processors: applied to the float32 logits before the argmax; stateful ones get ``reset()``
            before the prefill and ``accept(tokens)`` after each step.
        state: sequences, done flags, streaming; returned when every row is done.
    """
    processors.reset()
    logits = runner.prefill(prompt_ids)                     # [rows, vocab] float32
    while True:
        scores = processors(state.sequences, logits)
        state.record(logits, scores, runner.last_output)
        tokens = state.append(scores.argmax(dim=-1))        # finished rows get pad
        processors.accept(tokens)
        if state.done:
            return state
        logits = runner.step(tokens)
