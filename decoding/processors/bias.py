"""Per-token bias and an allow-list: ``logit_bias`` (OpenAI API) and ``allowed_token_ids`` (vLLM).

Both are fixed for the whole call, so each builds one ``[vocab]`` tensor up front and the per-step
work is a single add or mask.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Mapping

import torch

from ..declarations import BEYOND, FIRST, PENALTY, Knob, Sampler
from .base import LogitsProcessor


def _is_token_id(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _check_ids_in_vocab(name: str, ids: Iterable[int], vocab_size: int) -> None:
    outside = sorted(i for i in ids if i >= vocab_size)
    if outside:
        raise ValueError(f"`{name}` names token ids {outside[:10]} outside the model's vocabulary [0, "
                         f"{vocab_size}); use ids of this model's tokenizer.")


class LogitBiasLogitsProcessor(LogitsProcessor):
    """Add a fixed bias to chosen tokens (the OpenAI API's ``logit_bias``): ``scores[v] += bias[v]``.

    ``bias`` is a map ``{token_id: value}`` with values in [-100, 100], as in the OpenAI API (about
    -100 bans a token, +100 forces it); tokens not in the map get 0.

    Args:
        logit_bias: ``{token_id: bias}``; ids in ``[0, vocab_size)``.
        vocab_size: width of the scores.
        device: where the scores live.
    """

    name = "logit_bias"

    def __init__(self, logit_bias: Mapping[int, float], vocab_size: int, device: torch.device = torch.device("cpu")):
        check_logit_bias(logit_bias)
        _check_ids_in_vocab("logit_bias", logit_bias, vocab_size)
        self.logit_bias = dict(logit_bias)
        self._bias = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        for token, value in self.logit_bias.items():
            self._bias[int(token)] = float(value)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores + self._bias.to(scores.dtype)


class AllowedTokenIdsLogitsProcessor(LogitsProcessor):
    """Only the listed tokens can be chosen (vLLM's ``allowed_token_ids``): ``scores[v] = -inf`` for ``v`` not allowed.

    Args:
        allowed_token_ids: a non-empty collection of ids in ``[0, vocab_size)``.
        vocab_size: width of the scores.
        device: where the scores live.
    """

    name = "allowed_token_ids"

    def __init__(self, allowed_token_ids: Iterable[int], vocab_size: int, device: torch.device = torch.device("cpu")):
        allowed = sorted({int(i) for i in check_allowed_token_ids(allowed_token_ids)})
        _check_ids_in_vocab("allowed_token_ids", allowed, vocab_size)
        self.allowed_token_ids = allowed
        self._banned = torch.ones(vocab_size, dtype=torch.bool, device=device)
        self._banned[allowed] = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(self._banned, -float("inf"))


def check_logit_bias(logit_bias) -> None:
    """``logit_bias`` must map token ids (ints >= 0) to finite numbers in [-100, 100]."""
    if not isinstance(logit_bias, Mapping) or not logit_bias:
        raise ValueError(f"`logit_bias` must be a non-empty dict {{token_id: bias}}, but is {logit_bias!r}.")
    for token, value in logit_bias.items():
        if not _is_token_id(token):
            raise ValueError(f"`logit_bias` keys must be token ids (ints >= 0), but one is {token!r}; "
                             "convert string keys with int().")
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not -100.0 <= value <= 100.0):
            raise ValueError(f"`logit_bias[{token}]` must be a number in [-100, 100], but is {value!r}.")


def check_allowed_token_ids(allowed_token_ids) -> list[int]:
    """``allowed_token_ids`` must be a non-empty list of token ids (ints >= 0); returns it as a list."""
    if isinstance(allowed_token_ids, (str, bytes, Mapping)) or not isinstance(allowed_token_ids, Iterable):
        raise ValueError(f"`allowed_token_ids` must be a non-empty list of token ids, but is {allowed_token_ids!r}.")
    ids = allowed_token_ids.tolist() if isinstance(allowed_token_ids, torch.Tensor) else list(allowed_token_ids)
    if not ids or not all(_is_token_id(i) for i in ids):
        raise ValueError(f"`allowed_token_ids` must be a non-empty list of token ids (ints >= 0), but is "
                         f"{allowed_token_ids!r}.")
    return ids


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.


def _build_logit_bias(settings, context):
    if settings.logit_bias is None:
        return None
    return LogitBiasLogitsProcessor(settings.logit_bias, context.vocab_size, device=context.device)


def _build_allowed(settings, context):
    if settings.allowed_token_ids is None:
        return None
    return AllowedTokenIdsLogitsProcessor(settings.allowed_token_ids, context.vocab_size, device=context.device)


LOGIT_BIAS = Sampler(
    LogitBiasLogitsProcessor, stage=PENALTY, build=_build_logit_bias,
    knobs=(Knob("logit_bias", BEYOND, "add a fixed bias to chosen tokens (OpenAI)",
                check=lambda name, v: check_logit_bias(v), values="{token_id: bias}, bias in [-100, 100]"),),
    places={"vllm": "after min_new_tokens", "llama.cpp": FIRST, "mlx": FIRST})

ALLOWED_TOKEN_IDS = Sampler(
    AllowedTokenIdsLogitsProcessor, stage=PENALTY, build=_build_allowed,
    knobs=(Knob("allowed_token_ids", BEYOND, "only these tokens can be chosen (vLLM)",
                check=lambda name, v: check_allowed_token_ids(v), values="non-empty list of ids"),),
    places={"vllm": FIRST})
