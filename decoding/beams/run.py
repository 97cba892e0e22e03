"""Beam search inside ``generate``: from the resolved settings to the reference's output object.

``generate`` calls :func:`check_beam_arguments` before the first forward pass and hands
``num_beams > 1`` calls to :func:`run_beam_strategy`, which runs the loop of
:mod:`decoding.strategies.beam` with the optional extras (recorded outputs, the search tree,
streaming) and builds what the reference returns.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .streaming import BeamStreamAdapter, is_beam_streamer, stream_best
from .tree import BeamTree
from ..config import Settings
from ..outputs import GenerateOutput
from ..processors import LogitsProcessorList
from ..runner import ModelRunner
from ..stopping import StoppingCriteriaList
from ..strategies.beam import BeamConfig, beam_search, start
from ..strategies.state import StepOutputs


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


def run_beam_strategy(model: Any, input_ids: torch.LongTensor, attention_mask: torch.LongTensor,
                      settings: Settings, processors: LogitsProcessorList, criteria: StoppingCriteriaList,
                      eos: Optional[torch.Tensor], pad: Optional[torch.Tensor], streamer: Any, max_length: int,
                      output_beam_tree: bool = False):
    """Run beam search (or beam sampling) on prepared inputs (each prompt repeated ``num_beams`` times).

    Returns ``[B * num_return_sequences, length]`` int64, or a :class:`GenerateOutput` with
    ``sequences``, ``beam_indices`` (int32), ``sequences_scores`` (with ``output_scores``), ``scores``,
    ``logits``, ... as the reference's ``GenerateBeamDecoderOnlyOutput``, and
    ``trace["beam_tree"]`` with ``output_beam_tree=True``.
    """
    from ..generate import GenerationInterrupted  # generate imports this module

    config = beam_config(settings, max_length, eos, pad)
    return_dict = bool(settings.return_dict_in_generate)
    attentions, hidden_states = bool(settings.output_attentions), bool(settings.output_hidden_states)
    runner = ModelRunner(model, attention_mask, max_length, use_cache=bool(settings.use_cache),
                         output_device=input_ids.device, output_attentions=attentions,
                         output_hidden_states=hidden_states)
    outputs = StepOutputs(return_dict and bool(settings.output_scores), return_dict and bool(settings.output_logits),
                          return_dict and attentions, return_dict and hidden_states)
    prompts, prompt_length = input_ids.shape[0] // config.num_beams, input_ids.shape[1]

    observers: list = []
    tree = BeamTree(prompts, config, prompt_length) if output_beam_tree else None
    if tree is not None:
        observers.append(tree)
    if is_beam_streamer(streamer):
        observers.append(BeamStreamAdapter(streamer, config.early_stopping))
    elif streamer is not None:
        streamer.put(input_ids[::config.num_beams].cpu())             # the prompt, one row per prompt

    state = start(input_ids, config)
    try:
        result = beam_search(runner, input_ids, processors, criteria, config, outputs, observers, state)
    except (Exception, KeyboardInterrupt) as error:
        if state.length == state.prompt_length:
            raise
        raise GenerationInterrupted(
            f"beam search stopped after {state.step} new tokens by {type(error).__name__}: {error}; the "
            "running beams so far ([batch * num_beams, length]) are in .partial",
            state.flat_running_ids().clone()) from error

    if is_beam_streamer(streamer):
        streamer.on_finish(result.sequences, result.sequences_scores)
    elif streamer is not None:
        stream_best(streamer, result.sequences, result.beam_indices, prompt_length, config.num_return_sequences)
    if not return_dict:
        return result.sequences
    as_tuple = (lambda items: tuple(items) if items is not None else None)
    return GenerateOutput(
        sequences=result.sequences,
        scores=as_tuple(outputs.scores), logits=as_tuple(outputs.logits),
        sequences_scores=result.sequences_scores if settings.output_scores else None,
        beam_indices=result.beam_indices,
        attentions=as_tuple(outputs.attentions), hidden_states=as_tuple(outputs.hidden_states),
        past_key_values=runner.cache,
        trace={"beam_tree": tree.finish(config.num_return_sequences)} if tree is not None else None)
