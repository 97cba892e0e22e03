"""Range checks of the processor knobs, run by :mod:`decoding.validation` before the first forward.

Each error is a ``ValueError`` naming the knob, the bad value and the valid range. Some values the
reference silently ignores (``typical_p=1.5``, ``epsilon_cutoff=1.5``, ``no_repeat_ngram_size=-1``,
``suppress_tokens`` outside the vocabulary, ...) are refused here; docs/processors.md lists them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

import torch

from .bans import _as_bias_dict
from .guidance import check_guidance_scale
from .lengths import check_exponential_decay
from .tokens import is_token_id
from .watermark import check_watermarking_config


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _check_interval(settings, name: str, low: float, high: float, low_open: bool, high_open: bool,
                    note: str = "") -> None:
    value = getattr(settings, name)
    if value is None:
        return
    ok = _is_real(value) and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` has to be a number in {interval}{note}, but is {value!r}.")


def _check_count(settings, name: str, note: str = "") -> None:
    value = getattr(settings, name)
    if value is not None and not (_is_int(value) and value >= 0):
        raise ValueError(f"`{name}` has to be an integer >= 0{note}, but is {value!r}.")


def _check_penalty(settings, name: str) -> None:
    value = getattr(settings, name)
    if value is not None and not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` has to be a finite number > 0 (1.0 disables it), but is {value!r}.")


def _check_id_list(settings, name: str, allow_int: bool = False, allow_empty: bool = True) -> None:
    value = getattr(settings, name)
    if value is None or (allow_int and is_token_id(value)):
        return
    if not isinstance(value, (list, tuple)) or not all(is_token_id(t) for t in value) or (not value and not allow_empty):
        kind = "a token id or a non-empty list of token ids" if allow_int else "a list of token ids"
        raise ValueError(f"`{name}` has to be {kind} (integers >= 0), but is {value!r}.")


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(value)] if is_token_id(value) else [int(t) for t in value]


def check_processor_settings(settings) -> None:
    """Types and ranges of every processor knob (no model needed)."""
    s = settings
    _check_penalty(s, "repetition_penalty")
    _check_penalty(s, "encoder_repetition_penalty")
    _check_count(s, "no_repeat_ngram_size", " (0 disables it)")
    _check_count(s, "encoder_no_repeat_ngram_size", " (0 disables it)")
    _check_count(s, "min_length")
    _check_count(s, "min_new_tokens")
    _check_interval(s, "top_h", 0, 1, low_open=True, high_open=False)
    _check_interval(s, "min_p", 0, 1, low_open=False, high_open=False)
    _check_interval(s, "typical_p", 0, 1, low_open=True, high_open=False, note=" (1 disables it)")
    _check_interval(s, "epsilon_cutoff", 0, 1, low_open=False, high_open=True, note=" (0 disables it)")
    _check_interval(s, "eta_cutoff", 0, 1, low_open=False, high_open=True, note=" (0 disables it)")
    if s.bad_words_ids is not None:
        words = s.bad_words_ids
        if not (isinstance(words, list) and words and all(
                isinstance(w, list) and w and all(is_token_id(t) for t in w) for w in words)):
            raise ValueError("`bad_words_ids` has to be a non-empty list of non-empty lists of token ids "
                             f"(integers >= 0), but is {words!r}.")
    if s.sequence_bias is not None:
        _as_bias_dict(s.sequence_bias)
    _check_id_list(s, "suppress_tokens")
    _check_id_list(s, "begin_suppress_tokens")
    _check_id_list(s, "forced_bos_token_id", allow_int=True)
    if isinstance(s.forced_bos_token_id, (list, tuple)):
        raise ValueError(f"`forced_bos_token_id` has to be one token id, but is {s.forced_bos_token_id!r}.")
    _check_id_list(s, "forced_eos_token_id", allow_int=True, allow_empty=False)
    if s.suppress_tokens is not None:   # the reference's own check: forcing a suppressed token gives nan
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            forced = set(_token_ids(getattr(s, name)))
            if forced and forced <= set(_token_ids(s.suppress_tokens)):
                raise ValueError(f"Every token in `{name}` ({sorted(forced)}) is also in `suppress_tokens`, "
                                 "which leaves no finite score at the forcing step; remove it from one of them "
                                 "(use min_new_tokens to prevent an early eos).")
    for name in ("remove_invalid_values", "renormalize_logits"):
        if getattr(s, name) is not None and not isinstance(getattr(s, name), bool):
            raise ValueError(f"`{name}` has to be True or False, but is {getattr(s, name)!r}.")
    if s.exponential_decay_length_penalty is not None:
        check_exponential_decay(s.exponential_decay_length_penalty)
        if s.eos_token_id is None or (isinstance(s.eos_token_id, (list, tuple)) and not s.eos_token_id):
            raise ValueError("`exponential_decay_length_penalty` acts on the eos score, but no `eos_token_id` "
                             "is set; pass eos_token_id.")
    if s.guidance_scale is not None:
        check_guidance_scale(s.guidance_scale)
    if s.watermarking_config is not None:
        check_watermarking_config(s.watermarking_config)


def check_processor_inputs(settings, vocab_size: Optional[int], batch_size: int, rows_per_prompt: int,
                           prefix_allowed_tokens_fn: Optional[Callable] = None,
                           negative_prompt_ids: Optional[torch.Tensor] = None,
                           negative_prompt_attention_mask: Optional[torch.Tensor] = None) -> None:
    """Token ids within the vocabulary, and the call arguments that feed processors."""
    s = settings
    if vocab_size is not None:
        listed = {
            "bad_words_ids": [t for w in (s.bad_words_ids or []) for t in w],
            "sequence_bias": [t for ids in (_as_bias_dict(s.sequence_bias) if s.sequence_bias else {}) for t in ids],
            "suppress_tokens": _token_ids(s.suppress_tokens),
            "begin_suppress_tokens": _token_ids(s.begin_suppress_tokens),
            "forced_bos_token_id": _token_ids(s.forced_bos_token_id),
            "forced_eos_token_id": _token_ids(s.forced_eos_token_id),
        }
        for name, ids in listed.items():
            outside = sorted({t for t in ids if t >= vocab_size})
            if outside:
                raise ValueError(f"`{name}` holds token ids {outside}, outside the model's vocabulary "
                                 f"[0, {vocab_size}); was it made by a different tokenizer?")
    if prefix_allowed_tokens_fn is not None and not callable(prefix_allowed_tokens_fn):
        raise ValueError("`prefix_allowed_tokens_fn` has to be a function (batch_id, input_ids) -> list of "
                         f"allowed token ids, but is {prefix_allowed_tokens_fn!r}.")
    if negative_prompt_attention_mask is not None and negative_prompt_ids is None:
        raise ValueError("`negative_prompt_attention_mask` was given without `negative_prompt_ids`; pass both.")
    if negative_prompt_ids is None:
        return
    if s.guidance_scale is None:
        raise ValueError("`negative_prompt_ids` only acts through classifier-free guidance; set guidance_scale "
                         "(> 1 to steer away from the negative prompt).")
    ids = negative_prompt_ids
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError("`negative_prompt_ids` has to be a 2-D integer tensor [batch, length], but is "
                         f"{getattr(ids, 'shape', ids)!r}.")
    if ids.shape[1] == 0 or ids.shape[0] not in (batch_size, batch_size * rows_per_prompt):
        expected = sorted({batch_size, batch_size * rows_per_prompt})
        raise ValueError(f"`negative_prompt_ids` has shape {tuple(ids.shape)}; it needs {' or '.join(map(str, expected))} "
                         "rows (one per prompt, or one per returned sequence) and at least one token.")
    if bool((ids < 0).any()) or (vocab_size is not None and bool((ids >= vocab_size).any())):
        raise ValueError(f"`negative_prompt_ids` holds ids outside the model's vocabulary [0, {vocab_size}).")
    mask = negative_prompt_attention_mask
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(f"`negative_prompt_attention_mask` has to be a tensor of the shape of "
                             f"negative_prompt_ids {tuple(ids.shape)}, but is {getattr(mask, 'shape', mask)!r}.")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("`negative_prompt_attention_mask` must contain only 0 (padding) and 1 (real tokens).")
