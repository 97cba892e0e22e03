"""Setting up speculative decoding from ``generate``'s arguments: checks, then the drafter.

Speculation is on when ``assistant_model``, ``prompt_lookup_num_tokens`` or ``assistant_early_exit``
is set (the reference's trigger for its assisted mode). The drafter is chosen in the reference's
order: early exit, then prompt lookup, then the draft model.

Where the draft model's schedule comes from, as in the reference: ``num_assistant_tokens``,
``num_assistant_tokens_schedule`` and ``assistant_confidence_threshold`` are read from the
*drafting* model's ``generation_config`` (the assistant's; the target's own for early exit), with the
reference's defaults (20, ``"constant"``, 0.4). Deliberate difference: the reference ignores these
three when they are passed to ``generate``; `decoding` uses a value passed to the call.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any, Optional

import torch

from .block_runner import has_sliding_layers, new_cache
from ...config import GLOBAL_DEFAULTS, Settings
from ...inputs import as_id_tensor
from .drafters import DraftModel, Drafter, EarlyExit, PromptLookup, draft_pipeline
from ...processors import LogitsProcessorList, PipelineContext
from ...processors.base import capabilities

SCHEDULES = ("constant", "heuristic", "heuristic_transient")

SCHEDULE_FIELDS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def is_speculative(settings: Settings, assistant_model: Any) -> bool:
    """True when the call asks for speculative (the reference: assisted) decoding."""
    return (assistant_model is not None or settings.prompt_lookup_num_tokens is not None
            or settings.assistant_early_exit is not None)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _num_layers(model: Any) -> Optional[int]:
    config = model.config.get_text_config(decoder=True)
    return getattr(config, "num_hidden_layers", None)


def schedule_values(settings: Settings, drafting_model: Any) -> dict[str, Any]:
    """The three schedule knobs: from the call if passed there, else the drafting model's config, else defaults."""
    config = getattr(drafting_model, "generation_config", None)
    values = {}
    for name in SCHEDULE_FIELDS:
        if name in settings.explicit:
            values[name] = getattr(settings, name)
        else:
            value = getattr(config, name, None) if config is not None else None
            values[name] = GLOBAL_DEFAULTS[name] if value is None else value
    return values


def check_speculation(settings: Settings, model: Any, assistant_model: Any, rows: int, streamer: Any,
                      seed: Any = None, processors: Any = ()) -> None:
    """Refuse what speculation cannot do, before the first forward pass; messages name the fix."""
    s = settings
    if not s.use_cache:
        raise ValueError("speculative decoding (assistant_model / prompt_lookup_num_tokens / assistant_early_exit) "
                         "needs the KV cache: remove use_cache=False.")
    if s.prompt_lookup_num_tokens is not None and (not _is_int(s.prompt_lookup_num_tokens)
                                                   or s.prompt_lookup_num_tokens <= 0):
        raise ValueError(f"`prompt_lookup_num_tokens` must be an integer > 0, but is {s.prompt_lookup_num_tokens!r}.")
    if s.max_matching_ngram_size is not None and (not _is_int(s.max_matching_ngram_size)
                                                  or s.max_matching_ngram_size <= 0):
        raise ValueError(f"`max_matching_ngram_size` must be an integer > 0 (default 2), but is "
                         f"{s.max_matching_ngram_size!r}.")
    if s.assistant_early_exit is not None:
        layers = _num_layers(model)
        if not _is_int(s.assistant_early_exit) or s.assistant_early_exit < 1 or (
                layers is not None and s.assistant_early_exit > layers):
            raise ValueError(f"`assistant_early_exit` must be an integer in [1, {layers}] (the number of layers "
                             f"that draft), but is {s.assistant_early_exit!r}.")
        if not supports_early_exit(model):
            raise NotImplementedError(
                f"assistant_early_exit={s.assistant_early_exit!r}: {type(model).__name__} runs all its layers whatever "
                "config.num_hidden_layers says, so it cannot exit early (the reference fails inside the model with "
                "IndexError). Use prompt_lookup_num_tokens or an assistant_model instead.")
    if assistant_model is not None and (s.prompt_lookup_num_tokens is not None or s.assistant_early_exit is not None):
        other = "prompt_lookup_num_tokens" if s.prompt_lookup_num_tokens is not None else "assistant_early_exit"
        raise ValueError(f"both assistant_model and {other} were given; the reference would silently ignore "
                         "assistant_model. Pass only one of them.")
    if assistant_model is not None:
        if not hasattr(assistant_model, "forward") or not hasattr(assistant_model, "config"):
            raise TypeError(f"assistant_model must be a transformers causal LM, got {type(assistant_model).__name__}.")
        width = _logits_width(model)
        draft_width = _logits_width(assistant_model)
        if width is not None and draft_width is not None and width != draft_width:
            raise ValueError(
                f"assistant_model has a vocabulary of {draft_width} tokens but the model has {width}; the draft "
                "must share the model's tokenizer (different tokenizers are not supported).")
    drafting_model = assistant_model if assistant_model is not None else model
    if s.prompt_lookup_num_tokens is None:
        values = schedule_values(s, drafting_model)
        tokens, schedule, threshold = (values[name] for name in SCHEDULE_FIELDS)
        if not _is_int(tokens) or tokens < 1:
            raise ValueError(f"`num_assistant_tokens` must be an integer >= 1, but is {tokens!r}.")
        if schedule not in SCHEDULES:
            raise ValueError(f"`num_assistant_tokens_schedule` must be one of {SCHEDULES}, but is {schedule!r}.")
        if threshold is not None and (not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1):
            raise ValueError(f"`assistant_confidence_threshold` must be a number in [0, 1] or None, but is "
                             f"{threshold!r}.")
    _check_processors(processors, rows, drafts_with_a_model=s.prompt_lookup_num_tokens is None
                      or s.assistant_early_exit is not None, seeded=seed is not None and bool(s.do_sample))
    if s.output_attentions or s.output_hidden_states:
        raise NotImplementedError("output_attentions / output_hidden_states are not supported with speculative "
                                  "decoding yet; remove them or use plain decoding.")
    if rows > 1:
        if streamer is not None:
            raise ValueError(f"a streamer with speculative decoding needs one row (rows accept different numbers "
                             f"of tokens per round), but there are {rows}; remove streamer= or generate one prompt.")
        if s.return_dict_in_generate and (s.output_scores or s.output_logits):
            raise NotImplementedError(f"output_scores / output_logits with speculative decoding need one row, but "
                                      f"there are {rows}; remove them or generate one prompt at a time.")
        for name, m in (("model", model), ("assistant_model", assistant_model)):
            if m is not None and has_sliding_layers(new_cache(m)):
                raise NotImplementedError(
                    f"{name} has sliding-window attention layers; speculative decoding with {rows} rows would leave "
                    "holes inside the window. Generate one prompt at a time for this model.")


def _check_processors(processors: Any, rows: int, drafts_with_a_model: bool, seeded: bool = False) -> None:
    """Refuse the processors speculation cannot apply exactly, from what each declares (see
    ``LogitsProcessor``); messages name the processor and the fix.

    With several rows, rows of different lengths reach the processors right-aligned in one tensor
    (:mod:`.ragged`), so a processor that reads a row's length or prompt boundary would see another
    length than plain decoding shows it.
    """
    for processor in processors:
        name = getattr(processor, "name", None) or type(processor).__name__
        declared = capabilities(processor)
        if declared.stateful:
            raise NotImplementedError(
                f"{name} ({type(processor).__name__}) keeps state through accept(), but speculative decoding "
                "scores several positions per forward and takes some of them back; drop it or use plain "
                "decoding.")
        if declared.runs_model and drafts_with_a_model:
            raise NotImplementedError(
                f"{name} with a draft model or early exit: {name} ({type(processor).__name__}) runs the model "
                "itself with its own cache, and the draft would share that cache with the target (the reference "
                "fails with IndexError for guidance_scale). Use prompt_lookup_num_tokens or plain decoding.")
        # with one unseeded row it is called as the reference calls it (once per verified position)
        if declared.one_call_per_step and (rows > 1 or seeded):
            where = f"over {rows} rows" if rows > 1 else "with seed="
            raise NotImplementedError(
                f"{name} ({type(processor).__name__}) moves its own state one token per call, and speculative "
                f"decoding calls it once per verified position, so {where} its tokens would not be those of plain "
                f"decoding; generate one prompt at a time without seed=, or drop {name}.")
        if rows > 1 and declared.position_dependent:
            raise NotImplementedError(
                f"{name} {declared.position_reason}, and with speculative decoding over {rows} rows the rows "
                "reach the processors right-aligned at different lengths; generate one prompt at a time, or "
                f"drop {name}.")


def supports_early_exit(model: Any) -> bool:
    """True when the base model's forward loops over ``self.layers[: self.config.num_hidden_layers]``.

    That is what lets the reference (and us) run only the first k layers by lowering
    ``config.num_hidden_layers`` during the draft's forwards.
    """
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    try:
        source = inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return False
    return "config.num_hidden_layers]" in source.replace(" ", "")


def _logits_width(model: Any) -> Optional[int]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return getattr(model.config.get_text_config(decoder=True), "vocab_size", None)


def draft_eos(eos: Optional[torch.Tensor], drafting_model: Any, device: torch.device) -> Optional[torch.Tensor]:
    """The eos ids a draft stops at: the call's, or when the call has none, the drafting model's own.

    (The reference's assistant runs its own ``generate`` on a copy of the call's settings, and there a
    setting left None is filled from the assistant's ``generation_config``.)
    """
    if eos is not None:
        return eos
    config = getattr(drafting_model, "generation_config", None)
    return as_id_tensor(getattr(config, "eos_token_id", None), device)


def draft_pad(settings: Settings, drafting_model: Any, eos: Optional[torch.Tensor],
              device: torch.device) -> Optional[torch.Tensor]:
    """The pad id of the reference's assistant ``generate``: the call's, the drafting model's, or ``eos[0]``."""
    pad = settings.pad_token_id
    if pad is None:
        pad = getattr(getattr(drafting_model, "generation_config", None), "pad_token_id", None)
    ids = as_id_tensor(pad, device)
    if ids is not None:
        return ids[0]
    return eos[0] if eos is not None else None


def build_drafter(settings: Settings, model: Any, assistant_model: Any, attention_mask: torch.Tensor,
                  processors: LogitsProcessorList, context: PipelineContext, eos: Optional[torch.Tensor],
                  max_length: int, seeds: Optional[list[int]] = None) -> Drafter:
    """The drafter the settings ask for, in the reference's order of precedence.

    ``seeds`` (``generate(seed=...)`` while sampling): a model drafter draws with the rows' seeded noise
    and applies the target's own pipeline, without the reference's quirks (there is no reference to
    match, and the closer the draft's distribution is to the target's, the more coupled drafts are
    accepted).
    """
    s = settings
    if s.prompt_lookup_num_tokens is not None and s.assistant_early_exit is None:
        vocab = getattr(model.config.get_text_config(decoder=True), "vocab_size", None) or context.vocab_size
        return PromptLookup(s.prompt_lookup_num_tokens, s.max_matching_ngram_size or 2, max_length, processors,
                            eos, vocab)
    drafting_model = model if s.assistant_early_exit is not None else assistant_model
    values = schedule_values(s, drafting_model)
    draft_context = dataclasses.replace(context, vocab_size=_logits_width(drafting_model) or context.vocab_size,
                                        eos_token_ids=eos, num_beams=1)
    draft_processors = processors if seeds is not None else draft_pipeline(s, draft_context, processors)
    common = dict(prompt_mask=attention_mask, processors=draft_processors, seeds=seeds,
                  do_sample=bool(s.do_sample), eos_token_ids=draft_eos(eos, drafting_model, context.device),
                  num_tokens=values["num_assistant_tokens"],
                  schedule=values["num_assistant_tokens_schedule"],
                  confidence_threshold=values["assistant_confidence_threshold"],
                  write_back=getattr(drafting_model, "generation_config", None))
    if seeds is None and attention_mask.shape[0] == 1 and bool((attention_mask == 1).all()):
        # one unpadded row: the reference's assistant infers its own mask from the sequence (see DraftModel);
        # with seeds there is no reference to copy, and the quirk would only cost accepted drafts
        pad_id = draft_pad(s, drafting_model, common["eos_token_ids"], context.device)
        if pad_id is not None:
            common["infer_mask_pad"] = (pad_id, common["eos_token_ids"])
    if s.assistant_early_exit is not None:
        return EarlyExit(model, s.assistant_early_exit, **common)
    return DraftModel(assistant_model, **common)
