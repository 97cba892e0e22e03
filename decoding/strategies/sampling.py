"""Greedy search and multinomial sampling: one loop, ending in a chooser that picks each row's token.

As llama.cpp ends its sampler chain in a selecting sampler, :func:`decode` ends every step in
``choose(scores) -> tokens``:

- :func:`argmax`: greedy search (``do_sample=False``);
- :func:`multinomial`: one draw per row from ``softmax(scores)`` with torch's global generator, as
  the reference draws (``do_sample=True``);
- :func:`seeded_draw`: one draw per row from its own stream keyed by ``(seed, step)``
  (``generate(seed=...)``): a row's tokens do not depend on the rest of the batch.

A new rule (Gumbel top-k, a confidence-gated argmax, ...) is a function ``[rows, vocab] float32 ->
[rows] int64`` passed as ``choose``; the loop stays as it is.
"""

from __future__ import annotations

import torch

from ..processors import LogitsProcessorList
from ..runner import ModelRunner
from .call import PreparedCall
from .choosers import Chooser, argmax, multinomial
from .state import SequenceState


def peers_running(this_rank_done: bool, device: torch.device) -> bool:
    """``synced_gpus``: whether some rank of the default ``torch.distributed`` group still has unfinished rows.

    One ``all_reduce`` of a 0/1 flag per call, as the reference does once per step, so every rank
    calls it as often as the others and all leave the loop at the same step.
    """
    flag = torch.tensor(0.0 if this_rank_done else 1.0, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.SUM)
    return bool(flag.item() > 0)


def decode(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
           state: SequenceState, choose: Chooser, synced: bool = False) -> SequenceState:
    """Run greedy search or sampling until every row is done.

    Args:
        runner: drives the model (prefill, then one token per row per step).
        prompt_ids: ``[rows, prompt_len]`` int64.
        processors: applied to the float32 logits before ``choose``; stateful ones get ``reset()``
            before the prefill and ``accept(tokens)`` after each step.
        state: sequences, done flags, recorded outputs, streaming; returned when every row is done.
        choose: ``[rows, vocab]`` processed scores -> ``[rows]`` tokens (:func:`argmax`,
            :func:`multinomial`, :func:`seeded_draw`, or your own).
        synced: ``synced_gpus``: a rank whose rows are done keeps feeding its last tokens (the result
            unchanged) until every rank is done, so that a sharded model's forwards stay in step.
    """
    processors.reset()
    logits = runner.prefill(prompt_ids)                     # [rows, vocab] float32
    while True:
        if not state.done:                                  # synced_gpus: a finished rank only keeps stepping
            scores = processors(state.sequences, logits)
            state.record(logits, scores, runner.last_output)
            tokens = state.append(choose(scores))           # finished rows get pad
            processors.accept(tokens)
        running = peers_running(state.done, state.sequences.device) if synced else not state.done
        if not running:
            return state
        logits = runner.step(tokens)


def greedy_search(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
                  state: SequenceState) -> SequenceState:
    """:func:`decode` with :func:`argmax`."""
    return decode(runner, prompt_ids, processors, state, argmax)


def sample(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
           state: SequenceState, draw: Chooser = multinomial) -> SequenceState:
    """:func:`decode` with a draw (:func:`multinomial` by default, or :func:`seeded_draw`)."""
    return decode(runner, prompt_ids, processors, state, draw)


def run(call: PreparedCall):
    """The table's entry for greedy search and sampling: the call's runner, state and chooser, then :func:`decode`."""
    runner, state = call.new_runner(), call.new_state()
    decode(runner, call.input_ids, call.processors, state, call.chooser(state), synced=call.synced_gpus)
    return call.finish(state, runner)
