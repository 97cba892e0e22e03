"""Checks that run before the first forward pass, with errors that say what to change.

Where the reference fails deep inside torch (``IndexError: index out of range in self`` for an id
outside the vocabulary, ``IndexError: tuple index out of range`` for 1-D ids, ...), or silently
ignores a value (``top_p=1.5``), `decoding` raises here instead. docs/api.md lists each difference.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch

from .config import NOT_YET_IMPLEMENTED, Settings
from .processors.beyond import check_beyond_settings
from .processors.checks import check_processor_inputs, check_processor_settings  # noqa: F401 (re-exported)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def input_vocab_size(model: Any) -> Optional[int]:
    """How many ids the model's input embedding accepts (None when it cannot be told)."""
    try:
        embeddings = model.get_input_embeddings()
        return int(embeddings.num_embeddings) if hasattr(embeddings, "num_embeddings") else int(embeddings.weight.shape[0])
    except (AttributeError, NotImplementedError, TypeError):
        config = getattr(model, "config", None)
        size = getattr(config.get_text_config(decoder=True), "vocab_size", None) if config is not None else None
        return int(size) if size is not None else None


def check_input_ids(input_ids: Any, vocab_size: Optional[int]) -> None:
    """``input_ids`` must be a 2-D integer tensor ``[batch, length]`` of ids in ``[0, vocab)``."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids must be a torch.LongTensor of shape [batch, length], got {type(input_ids).__name__}; "
            "wrap token ids with torch.tensor([[...]]) or use tokenizer(..., return_tensors='pt').")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise TypeError(
            f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}; "
            "convert them with input_ids.long().")
    if input_ids.dim() != 2:
        fix = " Add a batch dimension with input_ids[None]." if input_ids.dim() == 1 else ""
        raise ValueError(f"input_ids must be 2-D [batch, length], got shape {tuple(input_ids.shape)}.{fix}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids is empty (shape {tuple(input_ids.shape)}); give at least one token per row "
            "(for example the tokenizer's bos token).")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bad = low if low < 0 else high
        where = (input_ids == bad).nonzero()[0].tolist()
        raise ValueError(
            f"input_ids contains token id {bad} at position {where}, outside the model's vocabulary "
            f"[0, {vocab_size}); was it made by a different tokenizer?")


def check_attention_mask(attention_mask: Any, input_ids: torch.Tensor) -> None:
    """The mask must be a 0/1 tensor of exactly the shape of ``input_ids``."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}.")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
            f"{tuple(input_ids.shape)}; they must match (1 for real tokens, 0 for left padding).")
    if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must contain only 0 (padding) and 1 (real tokens).")


def check_not_yet_implemented(settings: Settings, call_arguments: dict[str, Any]) -> None:
    """Refuse knobs this version does not implement, instead of silently ignoring them."""
    for name, default in NOT_YET_IMPLEMENTED.items():
        value = call_arguments[name] if name in call_arguments else settings.values.get(name, default)
        if value is not None and value != default and not (isinstance(value, (list, tuple, dict)) and not value
                                                          and default is None):
            raise NotImplementedError(
                f"`{name}={value!r}` is not supported by this version of decoding yet; remove it "
                "or use model.generate for this call.")


def check_settings(settings: Settings) -> None:
    """Range and type checks of the knobs, before anything runs."""
    s = settings
    if s.max_new_tokens is not None and (not _is_int(s.max_new_tokens) or s.max_new_tokens <= 0):
        raise ValueError(f"`max_new_tokens` must be an integer greater than 0, but is {s.max_new_tokens!r}.")
    if s.max_length is not None and (not _is_int(s.max_length) or s.max_length <= 0):
        raise ValueError(f"`max_length` must be a positive integer, but is {s.max_length!r}.")
    if s.max_time is not None and (not _is_number(s.max_time) or s.max_time <= 0):
        raise ValueError(f"`max_time` must be a positive number of seconds, but is {s.max_time!r}.")
    if s.temperature is not None:
        if not _is_number(s.temperature) or not math.isfinite(s.temperature) or s.temperature < 0:
            raise ValueError(f"`temperature` must be a finite number >= 0 (> 0 when sampling), but is {s.temperature!r}.")
        if s.do_sample and s.temperature == 0:
            raise ValueError(
                "`temperature` (=0) has to be strictly positive when do_sample=True; for greedy "
                "decoding set do_sample=False.")
    if s.top_k is not None and (not _is_int(s.top_k) or s.top_k < 0):
        raise ValueError(f"`top_k` must be an integer >= 0 (0 disables it), but is {s.top_k!r}.")
    if s.top_p is not None and (not _is_number(s.top_p) or not 0.0 <= s.top_p <= 1.0):
        raise ValueError(f"`top_p` must be a number in [0, 1] (1 disables it), but is {s.top_p!r}.")
    if not _is_int(s.num_return_sequences) or s.num_return_sequences < 1:
        raise ValueError(f"`num_return_sequences` must be an integer >= 1, but is {s.num_return_sequences!r}.")
    if not _is_int(s.num_beams) or s.num_beams < 1:
        raise ValueError(f"`num_beams` must be an integer >= 1, but is {s.num_beams!r}.")
    if s.num_beams == 1 and not s.do_sample and s.num_return_sequences != 1:
        raise ValueError(
            "Greedy methods (do_sample != True) without beam search do not support "
            f"`num_return_sequences` different than 1 (got {s.num_return_sequences}); set do_sample=True "
            "or num_beams >= num_return_sequences.")
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
        raise ValueError(
            f"`num_return_sequences` ({s.num_return_sequences}) has to be smaller or equal to "
            f"`num_beams` ({s.num_beams}).")
    if not (s.early_stopping is None or s.early_stopping is True or s.early_stopping is False
            or s.early_stopping == "never"):
        raise ValueError(
            f"`early_stopping` must be a boolean or 'never', but is {s.early_stopping!r}; use True, False "
            "or 'never' (see docs/beam-search.md).")
    if s.num_beams > 1 and (not _is_number(s.length_penalty) or not math.isfinite(s.length_penalty)):
        raise ValueError(
            f"`length_penalty` must be a finite number (1.0 by default; > 0 favours longer beam hypotheses, "
            f"< 0 shorter ones), but is {s.length_penalty!r}.")
    check_processor_settings(s)  # every processor knob: processors/checks.py
    check_beyond_settings(s)  # the knobs beyond the reference: processors/beyond.py
