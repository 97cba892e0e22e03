"""Diverse beam search's entry in the strategy table: its check, and from a prepared call to the loop of
:mod:`.groups` and back to the reference's output object (with the tree and streaming of :mod:`.group_observers`)."""

from __future__ import annotations

import torch

from ...outputs import BeamGenerateOutput
from .run import beam_output
from ...processors.base import capabilities
from ..call import PreparedCall
from ..state import StepOutputs
from .group_observers import GroupStreamAdapter, GroupTree
from .groups import GroupConfig, group_beam_search
from .streaming import is_beam_streamer, stream_best
def check(call: PreparedCall) -> None:
    """Refuse, before the first forward pass, the processors that cannot run once per group."""
    for processor in call.processors:
        declared = capabilities(processor)
        if declared.stateful or declared.one_call_per_step:
            raise ValueError(
                f"diverse beam search (num_beam_groups={call.settings.num_beam_groups}) runs the processors once per "
                f"group at every step, but {type(processor).__name__} keeps state from one call to the next; drop it "
                "or set num_beam_groups=1.")


def run(call: PreparedCall) -> BeamGenerateOutput:
    """Diverse beam search on a prepared call (each prompt repeated ``num_beams`` times).

    Returns the reference's ``GenerateBeamDecoderOnlyOutput`` fields: ``sequences`` ``[B * nrs, length]``,
    ``sequences_scores`` (with ``output_scores``), ``scores`` (processed log-probs per step, ``[B * N, V]``),
    ``logits``, ``beam_indices`` ``[B * nrs, new tokens]`` (the flat row each token came from, -1 after the
    end), and ``trace["beam_tree"]`` with ``output_beam_tree=True``.
    """
    settings, streamer = call.settings, call.streamer
    pad = call.pad if call.pad is not None else (call.eos[0] if call.eos is not None else torch.tensor(0))
    config = GroupConfig(num_beams=settings.num_beams, num_beam_groups=settings.num_beam_groups,
                         max_length=call.max_length, length_penalty=settings.length_penalty,
                         early_stopping=settings.early_stopping,
                         num_return_sequences=settings.num_return_sequences, eos_token_ids=call.eos,
                         pad_token_id=pad)
    runner = call.new_runner()
    outputs = StepOutputs(call.wants("scores"), call.wants("logits"), call.wants("attentions"),
                          call.wants("hidden_states"))
    batch = call.rows // config.num_beams
    observers: list = []
    tree = GroupTree(batch, config, call.prompt_length) if call.output_beam_tree else None
    if tree is not None:
        observers.append(tree)
    if is_beam_streamer(streamer):
        observers.append(GroupStreamAdapter(streamer, config, call.prompt_length))
    elif streamer is not None:
        streamer.put(call.input_ids[::config.num_beams].cpu())            # the prompt, one row per prompt

    running = [call.input_ids]
    call.keep_partial(lambda: running[0])                       # the running beams [B * N, length], on failure
    result = group_beam_search(runner, call.input_ids, call.processors, call.criteria, config, outputs, observers,
                               on_step=lambda ids: running.__setitem__(0, ids),
                               on_rows=call.tracer.beam_rows if call.tracer is not None else None)
    packed = result.packed
    if is_beam_streamer(streamer):
        streamer.on_finish(packed.sequences, packed.scores)
    elif streamer is not None:
        stream_best(streamer, packed.sequences, packed.beam_indices, call.prompt_length,
                    config.num_return_sequences)
    return beam_output(call, runner, outputs, packed.sequences, packed.scores,
                       packed.beam_indices if call.wants("scores") else None,
                       tree.finish(result) if tree is not None else None)
