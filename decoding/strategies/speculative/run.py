"""Speculative decoding's entry in the strategy table: ``check(call)``, then ``run(call) -> GenerateOutput``."""

from __future__ import annotations

from ...caches import is_static
from ...outputs import GenerateOutput
from ...stopping import MaxLengthCriteria, StoppingCriteriaList
from ...versions import CACHE_KEYWORD
from ..call import PreparedCall
from ..state import StepOutputs
from .block_runner import BlockRunner
from .loop import Rounds, SpeculationStats, acceptance_rule, speculative_decoding
from .ragged import RaggedSequences
from .setup import build_drafter, check_speculation


def check(call: PreparedCall) -> None:
    """Refuse what speculation cannot do, before the first forward pass (see :func:`.setup.check_speculation`)."""
    check_speculation(call.settings, call.model, call.assistant_model, call.rows, call.streamer, call.seeds,
                      call.processors)
    inputs = call.model_kwargs
    if inputs and (inputs.position_ids is not None or inputs.inputs_embeds is not None
                   or call.assistant_model is not None or call.settings.assistant_early_exit is not None):
        given = ("position_ids" if inputs.position_ids is not None else "inputs_embeds"
                 if inputs.inputs_embeds is not None else "model inputs (token_type_ids, ...)")
        raise NotImplementedError(
            f"{given} with speculative decoding: decoding passes model inputs to the target only, with prompt lookup "
            "(prompt_lookup_num_tokens) and without caller-given position_ids; drop them, or the speculation.")
    if is_static(call.cache):
        raise ValueError("speculative decoding does not run on a static cache here (model.generate refuses it "
                         "too before transformers 5.24); leave cache_implementation unset.")
    if call.cache is not None:
        raise NotImplementedError(
            "speculative decoding does not continue a cache passed as past_key_values or built from "
            "cache_implementation (model.generate runs it, but feeds the whole sequence again on top of the cache: "
            "wrong logits); pass the whole sequence without past_key_values, or decode without speculation.")


def run(call: PreparedCall) -> GenerateOutput:
    """Speculative decoding (``assistant_model``, ``prompt_lookup_num_tokens`` or ``assistant_early_exit``).

    With ``seed=`` and sampling, each row's tokens equal those of plain seeded sampling (the target's
    seeded draw decides every token); greedy ignores ``seed=``, as without speculation.
    """
    settings, streamer = call.settings, call.streamer
    seeds = call.seeds if settings.do_sample else None
    drafter = build_drafter(settings, call.model, call.assistant_model, call.attention_mask, call.processors,
                            call.context, call.eos, call.max_length, seeds)
    fill = int(call.pad) if call.pad is not None else 0
    sequences = RaggedSequences(call.input_ids, call.max_length, fill=fill)
    call.keep_partial(lambda: sequences.padded(fill))
    target = BlockRunner(call.model, call.attention_mask, output_device=call.input_ids.device,
                         model_kwargs=call.model_kwargs, check_finite=not call.settings.remove_invalid_values)
    rounds = Rounds(SpeculationStats(drafter.name), StepOutputs(call.wants("scores"), call.wants("logits")), streamer)
    rounds.observer = call.tracer.speculation_round if call.tracer is not None else None
    # with several rows, the length limit is per row (rows grow by different amounts): the loop checks it
    criteria = call.criteria if call.rows == 1 else StoppingCriteriaList(
        c for c in call.criteria if type(c).__name__ != MaxLengthCriteria.__name__)
    if streamer is not None:
        streamer.put(call.input_ids.cpu())

    speculative_decoding(target, drafter, sequences, call.processors, criteria,
                         acceptance_rule(bool(settings.do_sample), seeds), rounds, call.max_length, call.eos)

    if streamer is not None:
        streamer.end()
    stats = rounds.stats
    stats.target_forwards, stats.draft_forwards = target.forwards, getattr(drafter, "forwards", 0)
    as_tuple = (lambda items: tuple(items) if items is not None else None)
    return GenerateOutput(sequences=sequences.padded(fill), scores=as_tuple(rounds.outputs.scores),
                          logits=as_tuple(rounds.outputs.logits), **{CACHE_KEYWORD: target.cache},
                          trace={"speculation": stats})
