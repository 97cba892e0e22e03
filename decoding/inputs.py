"""Inputs: special tokens, the attention mask, left padding, row expansion and lengths.

Each function does one step of the reference's preparation (``GenerationMixin.generate`` in
transformers 5.23, before its decoding loop), so that the prompt reaching the runner is the one
``model.generate`` would build.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Optional, Sequence

import torch

from .config import Settings


def as_id_tensor(value: Any, device: torch.device) -> Optional[torch.Tensor]:
    """An id, a list of ids or a tensor as a 1-D int64 tensor (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.long).reshape(-1)
    if isinstance(value, int):
        value = [value]
    value = list(value)
    if not value:
        return None
    return torch.tensor(value, dtype=torch.long, device=device)


def special_tokens(settings: Settings, device: torch.device) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(eos [n_eos] int64 or None, pad scalar int64 or None)``; pad falls back to ``eos[0]``."""
    eos = as_id_tensor(settings.eos_token_id, device)
    pad = settings.pad_token_id
    if isinstance(pad, torch.Tensor):
        pad = pad.reshape(-1)[0].to(device)
    elif pad is not None:
        pad = torch.tensor(int(pad), dtype=torch.long, device=device)
    if pad is None and eos is not None:
        pad = eos[0]
    return eos, pad


def infer_attention_mask(input_ids: torch.LongTensor, pad: Optional[torch.Tensor],
                         eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """The reference's mask when none is given: ``ids != pad`` if pad occurs and is not an eos, else ones."""
    if pad is not None and bool((input_ids == pad).any()) and (eos is None or not bool(torch.isin(pad, eos))):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def expand_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """Repeat each row ``times`` times in place order: ``b0, b0, b1, b1, ...``."""
    return tensor if times == 1 else tensor.repeat_interleave(times, dim=0)


def take_inputs(input_ids: Optional[torch.Tensor], kwargs: dict[str, Any]) -> Optional[torch.Tensor]:
    """The prompt: the first argument, or the keyword ``input_ids`` or ``inputs`` (the reference's name),
    which are taken out of ``kwargs``.

    Raises:
        ValueError: the prompt was given twice (``generate(model, ids, input_ids=ids)``), as the reference raises.
    """
    given = [("the first argument", input_ids)] + [(f"`{name}`", kwargs.pop(name)) for name in ("inputs", "input_ids")
                                                  if name in kwargs]
    given = [(name, value) for name, value in given if value is not None]
    if len(given) > 1:
        raise ValueError(
            f"The prompt was given twice ({' and '.join(name for name, _ in given)}: `inputs` and `input_ids` name "
            "the same prompt); pass it once: generate(model, ids) or generate(model, input_ids=ids).")
    return given[0][1] if given else None


def check_inputs_embeds(model: Any, inputs_embeds: Any, input_ids: Optional[torch.Tensor]) -> None:
    """``inputs_embeds`` must be a float ``[batch, len, hidden]`` tensor with the batch of ``input_ids``, for a
    model whose forward takes embeddings (the reference raises ``ValueError`` otherwise too)."""
    forward = getattr(model, "prepare_inputs_for_generation", None) or getattr(model, "forward", model)
    if "inputs_embeds" not in inspect.signature(forward).parameters:
        raise ValueError(f"inputs_embeds: {type(model).__name__} does not take a prompt as embeddings; pass input_ids.")
    if not isinstance(inputs_embeds, torch.Tensor) or not inputs_embeds.dtype.is_floating_point \
            or inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0:
        raise ValueError(f"inputs_embeds must be a non-empty float tensor [batch, length, hidden], got "
                         f"{getattr(inputs_embeds, 'shape', type(inputs_embeds).__name__)!s}.")
    if input_ids is not None and input_ids.dim() == 2 and input_ids.shape[0] != inputs_embeds.shape[0]:
        raise ValueError(f"input_ids has {input_ids.shape[0]} rows but inputs_embeds has {inputs_embeds.shape[0]}; "
                         "give one prompt per row in both.")


def embeds_mask(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                pad: Optional[torch.Tensor], eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """The ``[batch, embeds_len]`` mask of a prompt given as embeddings: the caller's, else inferred from
    ``input_ids`` when they are as long (as the reference infers it), else all ones.

    Raises:
        ValueError: the mask does not match the embeddings, or ids of another length and no mask
            (the reference then builds positions that do not fit the embeddings).
    """
    shape = tuple(inputs_embeds.shape[:2])
    if attention_mask is not None:
        if tuple(attention_mask.shape) != shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but inputs_embeds is {shape} "
                             "(batch, length); the mask covers the embeddings.")
        return attention_mask
    if input_ids.shape[1] == 0:
        return torch.ones(shape, dtype=torch.long, device=inputs_embeds.device)
    if tuple(input_ids.shape) == shape:
        return infer_attention_mask(input_ids, pad, eos)
    raise ValueError(f"input_ids {tuple(input_ids.shape)} and inputs_embeds {shape} have different lengths and no "
                     "attention_mask was given: pass attention_mask [batch, embeds_len] for the embeddings.")


def prepare_embeds(model: Any, settings: Settings, inputs_embeds: Any, input_ids: Optional[torch.Tensor],
                   attention_mask: Optional[torch.Tensor], pad: Optional[torch.Tensor],
                   eos: Optional[torch.Tensor]) -> tuple[Settings, torch.LongTensor, torch.LongTensor]:
    """A prompt given as embeddings, prepared as the reference prepares it; returns ``(settings, input_ids,
    attention_mask)``.

    ``input_ids`` stay what the caller gave (they start the returned sequences and are what processors
    see) or become ``[batch, 0]``; the mask is the embeddings' (:func:`embeds_mask`); the cache is
    always used; ``min_length`` (without ``min_new_tokens``) counts the embeddings unless the ids are as
    long; ``repetition_penalty`` and ``no_repeat_ngram_size`` without ids warn that they see only the new tokens.
    """
    check_inputs_embeds(model, inputs_embeds, input_ids)
    if input_ids is None:
        input_ids = torch.ones((inputs_embeds.shape[0], 0), dtype=torch.long, device=inputs_embeds.device)
    attention_mask = embeds_mask(inputs_embeds, input_ids, attention_mask, pad, eos)
    changes: dict[str, Any] = {"use_cache": True}
    embeds_length = inputs_embeds.shape[1]
    if settings.min_new_tokens is None and input_ids.shape[1] != embeds_length and settings.min_length is not None:
        changes["min_length"] = max(settings.min_length - embeds_length, 0)
    if input_ids.shape[1] == 0:
        for name, off in (("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0)):
            if getattr(settings, name) not in (None, off):
                warnings.warn(f"`{name}` with inputs_embeds and without input_ids sees only the new tokens, not the "
                              "prompt (as with model.generate); pass input_ids too for it to see the prompt.",
                              UserWarning, stacklevel=4)
    return settings.replace(**changes), input_ids, attention_mask


def context_size(model: Any) -> Optional[int]:
    """The model's context in tokens: ``max_position_embeddings`` of its (decoder) text config, or None."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    return int(limit) if limit is not None else None


def has_learned_positions(model: Any) -> bool:
    """Whether the model looks up one learned vector per position (GPT-2's ``wpe``, OPT's ``embed_positions``).

    Such a model fails inside its forward (``IndexError``) at the first position past its context;
    models with rotary (RoPE) or ALiBi positions run on past it.
    """
    modules = model.named_modules() if hasattr(model, "named_modules") else ()
    return any(isinstance(module, torch.nn.Embedding) and (name.rsplit(".", 1)[-1] == "wpe" or
                                                           "position" in name.rsplit(".", 1)[-1])
               for name, module in modules)


def _check_positions(model: Any, attention_mask: Optional[torch.Tensor], prompt_length: int, max_length: int,
                     context: Optional[int]) -> None:
    """Refuse a length that would take a model with learned positions past its context (it crashes there).

    The reference feeds positions counted over each row's real tokens (left padding excluded), up to
    the one before the last token: ``longest real prompt + new tokens - 1`` positions.
    """
    if context is None or not has_learned_positions(model):
        return
    longest = prompt_length if attention_mask is None else int(attention_mask.sum(dim=-1).max())
    new = max_length - prompt_length
    if longest + new - 1 <= context:
        return
    fix = (f"shorten the prompt to at most {context} tokens" if longest > context else
           f"use max_new_tokens <= {context + 1 - longest}, or shorten the prompt")
    raise ValueError(
        f"{type(model).__name__} has learned position embeddings for {context} positions "
        f"(max_position_embeddings), but a prompt of {longest} tokens with {new} new tokens needs "
        f"{longest + new - 1}: model.generate fails inside the model there (IndexError). To stay within the "
        f"context, {fix}.")


def resolve_max_length(settings: Settings, prompt_length: int, model: Any,
                       attention_mask: Optional[torch.Tensor] = None, embeds_length: Optional[int] = None) -> int:
    """The absolute length (prompt included) at which generation stops, as the reference computes it.

    ``embeds_length``: the prompt was given as embeddings of that length; ``prompt_length`` counts the
    ids given beside them (0 without). An explicit ``max_length`` then counts the embeddings, unless the
    ids are as long (the reference's rule).

    Raises:
        ValueError: nothing can be generated (the prompt already reaches the length or, with no length
            set, the model's context), or a model with learned positions would be taken past its context.
    """
    context = context_size(model)
    if settings.max_new_tokens is not None:
        max_length = settings.max_new_tokens + prompt_length
    elif embeds_length is not None and embeds_length != prompt_length and not settings.has_default_max_length:
        max_length = settings.max_length - embeds_length
    elif settings.has_default_max_length:
        if context is not None and prompt_length >= context:
            runs_on = ("its positions run past the context, as with model.generate" if not has_learned_positions(model)
                       else "not past its context, though: its position embeddings are learned")
            raise ValueError(
                f"The prompt is {prompt_length} tokens long, but the model's context (max_position_embeddings) is "
                f"{context} tokens and, with neither max_new_tokens nor max_length set, generation stops at the "
                f"context: nothing can be generated. Shorten the prompt to at most {context - 1} tokens, or pass "
                f"max_new_tokens ({runs_on}).")
        max_length = settings.max_length + prompt_length
        if context is not None:
            max_length = min(max_length, context)
        warnings.warn(
            f"Neither max_new_tokens nor max_length was set: generating at most {max_length - prompt_length} "
            f"new tokens (max_length={max_length}), the reference's default. Pass max_new_tokens to choose.",
            UserWarning, stacklevel=3)
    else:
        max_length = settings.max_length
    if prompt_length >= max_length:
        raise ValueError(
            f"Input length of input_ids is {prompt_length}, but `max_length` is set to {max_length}, so "
            "nothing can be generated; set max_new_tokens (or a larger max_length).")
    _check_positions(model, attention_mask, prompt_length, max_length, context)
    return max_length


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Left-pad lists of ids into ``(input_ids, attention_mask)``, both ``[batch, longest]`` int64."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad needs at least one sequence and no empty sequence.")
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, longest - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, longest - len(seq):] = 1
    return ids, mask
