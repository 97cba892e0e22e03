"""Beam search's entry in the strategy table, ``run(call) -> GenerateOutput``, and the beam arguments' checks.

:func:`check_beam_arguments` runs for every call (a beam streamer or ``output_beam_tree`` without
beams is an error too). :func:`run` runs the loop of :mod:`.search` with the optional extras
(recorded outputs, the search tree, streaming) and builds what the reference returns.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .streaming import BeamStreamAdapter, is_beam_streamer, stream_best
from .tree import BeamTree
from ...config import Settings
from ...outputs import BeamGenerateOutput
from ...versions import CACHE_KEYWORD
from .search import BeamConfig, beam_search, start
from ..call import PreparedCall
from ..state import StepOutputs


def check_beam_arguments(settings: Settings, streamer: Any, output_beam_tree: Any, seed: Any = None) -> None:
    """The beam-only arguments of ``generate``, checked before anything runs."""
    if seed is not None and settings.num_beams > 1:
        raise NotImplementedError(
            f"`seed={seed!r}` (per-row random streams) is not supported with num_beams={settings.num_beams}: "
            "beams of one prompt share one draw over num_beams * vocab candidates. Drop seed= and set "
            "torch.manual_seed(...) before the call instead.")
    if not isinstance(output_beam_tree, bool):
        raise TypeError(f"`output_beam_tree` must be True or False, but is {output_beam_tree!r}.")
    if output_beam_tree and settings.num_beams <= 1:
        raise ValueError(
            f"`output_beam_tree=True` records the beam search tree, but num_beams is {settings.num_beams}; "
            "set num_beams >= 2 or drop output_beam_tree.")
    if output_beam_tree and not settings.return_dict_in_generate:
        raise ValueError(
            "`output_beam_tree=True` puts the tree in out.trace['beam_tree'], so it needs "
            "return_dict_in_generate=True; set it.")
    if is_beam_streamer(streamer) and settings.num_beams <= 1:
        raise ValueError(
            f"the streamer {type(streamer).__name__} is a beam streamer (it has on_step), but num_beams is "
            f"{settings.num_beams}; set num_beams >= 2 or pass a plain streamer (put/end).")


def beam_config(settings: Settings, max_length: int, eos: Optional[torch.Tensor],
                pad: Optional[torch.Tensor]) -> BeamConfig:
    """The loop's knobs from the resolved settings."""
    return BeamConfig(num_beams=settings.num_beams, max_length=max_length,
                      length_penalty=settings.length_penalty, early_stopping=settings.early_stopping,
                      num_return_sequences=settings.num_return_sequences, do_sample=bool(settings.do_sample),
                      eos_token_ids=eos, pad_token_id=pad)


def run(call: PreparedCall) -> BeamGenerateOutput:
    """Run beam search (or beam sampling) on a prepared call (each prompt repeated ``num_beams`` times).

    Returns a :class:`BeamGenerateOutput` with ``sequences`` ``[B * num_return_sequences, length]``,
    ``beam_indices`` (int32), ``sequences_scores`` (with ``output_scores``), ``scores``, ``logits``, ...
    as the reference's ``GenerateBeamDecoderOnlyOutput``, and ``trace["beam_tree"]`` with
    ``output_beam_tree=True``. Streamers get every live beam (beam streamers) or the best sequence.
    """
    settings, streamer, input_ids = call.settings, call.streamer, call.input_ids
    config = beam_config(settings, call.max_length, call.eos, call.pad)
    runner = call.new_runner()
    outputs = StepOutputs(call.wants("scores"), call.wants("logits"), call.wants("attentions"),
                          call.wants("hidden_states"))
    prompts, prompt_length = input_ids.shape[0] // config.num_beams, input_ids.shape[1]

    observers: list = []
    tree = BeamTree(prompts, config, prompt_length) if call.output_beam_tree else None
    if tree is not None:
        observers.append(tree)
    if call.tracer is not None:
        observers.append(call.tracer.beam_step)
    if is_beam_streamer(streamer):
        observers.append(BeamStreamAdapter(streamer, config.early_stopping))
    elif streamer is not None:
        streamer.put(input_ids[::config.num_beams].cpu())             # the prompt, one row per prompt

    state = start(input_ids, config)
    call.keep_partial(lambda: state.flat_running_ids().clone())      # the running beams [B * N, length]
    result = beam_search(runner, input_ids, call.processors, call.criteria, config, outputs, observers, state)

    if is_beam_streamer(streamer):
        streamer.on_finish(result.sequences, result.sequences_scores)
    elif streamer is not None:
        stream_best(streamer, result.sequences, result.beam_indices, prompt_length, config.num_return_sequences)
    return beam_output(call, runner, outputs, result.sequences, result.sequences_scores, result.beam_indices,
                       tree.finish(config.num_return_sequences) if tree is not None else None)


def beam_output(call: PreparedCall, runner: Any, outputs: StepOutputs, sequences: torch.LongTensor,
                sequences_scores: torch.FloatTensor, beam_indices: Optional[torch.LongTensor],
                beam_tree: Optional[list] = None) -> BeamGenerateOutput:
    """The output of every beam family (plain, diverse, constrained): the returned ``[B * R, length]``
    sequences with their scores, the per-step outputs the call asked for, the cache and the search tree."""
    as_tuple = (lambda items: tuple(items) if items is not None else None)
    return BeamGenerateOutput(
        sequences=sequences, scores=as_tuple(outputs.scores), logits=as_tuple(outputs.logits),
        sequences_scores=sequences_scores if call.settings.output_scores else None,
        beam_indices=beam_indices,
        attentions=as_tuple(outputs.attentions), hidden_states=as_tuple(outputs.hidden_states),
        **{CACHE_KEYWORD: runner.cache},
        trace={"beam_tree": beam_tree} if beam_tree is not None else None)
