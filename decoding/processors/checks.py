"""The processor knobs' checks that need more than a range, and the checks of the call's processor inputs.

The single-knob checks below have the signature ``check(name, value)`` of a knob's ``check``
(:mod:`decoding.knobs` declares which knob uses which); the one-line ranges (``top_p`` in [0, 1],
...) are declared there with :mod:`decoding.checks`. :func:`check_processor_settings` keeps the
rules that involve two knobs. Each error is a ``ValueError`` naming the knob, the bad value and the
valid values. Some values the reference silently ignores (``typical_p=1.5``, ``epsilon_cutoff=1.5``,
``no_repeat_ngram_size=-1``, ``suppress_tokens`` outside the vocabulary, ...) are refused;
docs/processors.md lists them.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..checks import is_token_id
from .bans import _as_bias_dict
from .guidance import check_guidance_scale
from .lengths import check_exponential_decay
from .watermark import check_watermarking_config


def _check_id_list(name: str, value: Any, allow_int: bool = False, allow_empty: bool = True) -> None:
    if allow_int and is_token_id(value):
        return
    if not isinstance(value, (list, tuple)) or not all(is_token_id(t) for t in value) or (not value and not allow_empty):
        kind = "a token id or a non-empty list of token ids" if allow_int else "a list of token ids"
        raise ValueError(f"`{name}` has to be {kind} (integers >= 0), but is {value!r}.")


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(value)] if is_token_id(value) else [int(t) for t in value]


def check_token_list(name: str, value: Any) -> None:
    """``suppress_tokens``, ``begin_suppress_tokens``: a list of token ids."""
    _check_id_list(name, value)


def check_forced_bos(name: str, value: Any) -> None:
    """``forced_bos_token_id``: one token id."""
    _check_id_list(name, value, allow_int=True)
    if isinstance(value, (list, tuple)):
        raise ValueError(f"`{name}` has to be one token id, but is {value!r}.")


def check_forced_eos(name: str, value: Any) -> None:
    """``forced_eos_token_id``: a token id or a non-empty list of them."""
    _check_id_list(name, value, allow_int=True, allow_empty=False)


def check_bad_words(name: str, value: Any) -> None:
    """``bad_words_ids``: a non-empty list of non-empty lists of token ids."""
    if not (isinstance(value, list) and value and all(
            isinstance(w, list) and w and all(is_token_id(t) for t in w) for w in value)):
        raise ValueError(f"`{name}` has to be a non-empty list of non-empty lists of token ids "
                         f"(integers >= 0), but is {value!r}.")


def check_sequence_bias(name: str, value: Any) -> None:
    """``sequence_bias``: ``{(ids...): bias}`` or ``[[[ids...], bias], ...]``."""
    _as_bias_dict(value)


def check_bool(name: str, value: Any) -> None:
    """``remove_invalid_values``, ``renormalize_logits``: True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` has to be True or False, but is {value!r}.")


def check_exponential_decay_value(name: str, value: Any) -> None:
    """``exponential_decay_length_penalty``: ``(start: int >= 0, factor: > 0)``."""
    check_exponential_decay(value)


def check_guidance(name: str, value: Any) -> None:
    """``guidance_scale``: a finite number >= 0."""
    check_guidance_scale(value)


def check_watermarking(name: str, value: Any) -> None:
    """``watermarking_config``: a watermarking config (or dict) with valid fields."""
    check_watermarking_config(value)


def check_processor_settings(settings) -> None:
    """The rules between processor knobs (each knob's own range is checked by its declaration)."""
    s = settings
    if s.suppress_tokens is not None:   # the reference's own check: forcing a suppressed token gives nan
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            forced = set(_token_ids(getattr(s, name)))
            if forced and forced <= set(_token_ids(s.suppress_tokens)):
                raise ValueError(f"Every token in `{name}` ({sorted(forced)}) is also in `suppress_tokens`, "
                                 "which leaves no finite score at the forcing step; remove it from one of them "
                                 "(use min_new_tokens to prevent an early eos).")
    if s.exponential_decay_length_penalty is not None:
        if s.eos_token_id is None or (isinstance(s.eos_token_id, (list, tuple)) and not s.eos_token_id):
            raise ValueError("`exponential_decay_length_penalty` acts on the eos score, but no `eos_token_id` "
                             "is set; pass eos_token_id.")


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
