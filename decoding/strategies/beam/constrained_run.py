"""Constrained beam search's entry in the strategy table: its check, and from a prepared call to the loop
of :mod:`.constrained` and back to the reference's output object."""

from __future__ import annotations

import torch

from ...constraints import ConstraintsNotMet, call_constraints
from ...outputs import BeamGenerateOutput
from .run import beam_output
from ..call import PreparedCall
from ..state import StepOutputs
from .constrained import ConstrainedConfig, constrained_beam_search
from .streaming import is_beam_streamer, stream_best


def check(call: PreparedCall) -> None:
    """Refuse, before the first forward pass, what constrained beam search does not give: a beam streamer, the tree."""
    if is_beam_streamer(call.streamer):
        raise NotImplementedError(
            f"constrained beam search does not stream its beams ({type(call.streamer).__name__} has on_step); pass a "
            "plain streamer (put/end), which gets the best sequence at the end, or none.")
    if call.output_beam_tree:
        raise NotImplementedError("constrained beam search does not record the search tree; drop output_beam_tree.")


def run(call: PreparedCall) -> BeamGenerateOutput:
    """Constrained beam search on a prepared call (each prompt repeated ``num_beams`` times).

    Returns the reference's ``GenerateBeamDecoderOnlyOutput`` fields: ``sequences`` ``[B * nrs, length]``, each
    meeting every constraint; ``sequences_scores`` (with ``output_scores``); ``scores``: per step, each row's
    running score plus the processed log-probs (the reference's choice for this method); ``logits``;
    ``beam_indices`` ``[B * nrs, new tokens]``, the flat row each token came from (-1 after the end).
    """
    settings, streamer = call.settings, call.streamer
    pad = call.pad if call.pad is not None else (call.eos[0] if call.eos is not None else torch.tensor(0))
    config = ConstrainedConfig(num_beams=settings.num_beams, max_length=call.max_length,
                               constraints=tuple(call_constraints(settings.constraints, settings.force_words_ids)),
                               length_penalty=settings.length_penalty, early_stopping=settings.early_stopping,
                               num_return_sequences=settings.num_return_sequences, eos_token_ids=call.eos,
                               pad_token_id=int(pad))
    runner = call.new_runner()
    outputs = StepOutputs(call.wants("scores"), call.wants("logits"), call.wants("attentions"),
                          call.wants("hidden_states"))
    if streamer is not None:
        streamer.put(call.input_ids[::config.num_beams].cpu())            # the prompt, one row per prompt
    running = [call.input_ids]
    call.keep_partial(lambda: running[0])                       # the running beams [B * N, length], on failure
    try:
        packed = constrained_beam_search(runner, call.input_ids, call.processors, call.criteria, config, outputs,
                                         on_step=lambda ids: running.__setitem__(0, ids),
                                         on_rows=call.tracer.beam_rows if call.tracer is not None else None)
    except ConstraintsNotMet:
        call.keep_partial(lambda: None)          # the search ended: not an interruption, no partial result
        raise
    if streamer is not None:
        stream_best(streamer, packed.sequences, packed.beam_indices, call.prompt_length,
                    config.num_return_sequences)
    return beam_output(call, runner, outputs, packed.sequences, packed.scores,
                       packed.beam_indices if call.wants("scores") else None)
