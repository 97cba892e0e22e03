"""Length control through the eos (and bos) scores.

- :class:`MinLengthLogitsProcessor`, :class:`MinNewTokensLengthLogitsProcessor`: no eos before a
  minimum length;
- :class:`ForcedBOSTokenLogitsProcessor`, :class:`ForcedEOSTokenLogitsProcessor`: one allowed token
  at the first / last position;
- :class:`ExponentialDecayLengthPenalty`: raise the eos score exponentially after a start length.

Lengths are ``input_ids.shape[-1]``: the prompt with its left padding counts.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence, Union

import torch

from .base import LogitsProcessor
from .tokens import id_tensor, is_token_id, vocab_mask

EosIds = Union[int, Sequence[int], torch.Tensor]


def _check_length(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` has to be an integer >= 0, but is {value!r}.")
    return int(value)


class MinLengthLogitsProcessor(LogitsProcessor):
    """``scores[eos] = -inf`` while ``len(input_ids) < min_length`` (prompt and pads included).

    Args:
        min_length: an integer >= 0.
        eos_token_id: an id, a list of ids or a tensor.
    """

    name = "min_length"
    position_dependent = True      # reads the row's length

    def __init__(self, min_length: int, eos_token_id: EosIds, device: Union[str, torch.device] = "cpu"):
        self.min_length = _check_length(min_length, "min_length")
        self.eos_token_id = id_tensor(eos_token_id, device, "eos_token_id", negative_ok=True)  # -1: eos off

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores
        return torch.where(vocab_mask(self.eos_token_id, scores.shape[-1], scores.device), -math.inf, scores)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """``scores[eos] = -inf`` while ``len(input_ids) - prompt_length_to_skip < min_new_tokens``.

    Args:
        prompt_length_to_skip: the (padded) prompt length, an integer >= 0.
        min_new_tokens: an integer >= 0.
        eos_token_id: an id, a list of ids or a tensor.
    """

    name = "min_new_tokens"
    position_dependent = True      # reads the row's length and where its prompt ends

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: EosIds,
                 device: Union[str, torch.device] = "cpu"):
        self.prompt_length_to_skip = _check_length(prompt_length_to_skip, "prompt_length_to_skip")
        self.min_new_tokens = _check_length(min_new_tokens, "min_new_tokens")
        self.eos_token_id = id_tensor(eos_token_id, device, "eos_token_id", negative_ok=True)  # -1: eos off

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        return torch.where(vocab_mask(self.eos_token_id, scores.shape[-1], scores.device), -math.inf, scores)


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """When ``len(input_ids) == 1``: every score ``-inf`` except ``scores[bos] = 0``.

    It only fires after a one-token prompt (encoder-decoder models, or a bos-only prompt).

    Args:
        bos_token_id: the token id to force.
    """

    name = "forced_bos_token_id"
    position_dependent = True      # reads the row's length

    def __init__(self, bos_token_id: int):
        if not is_token_id(bos_token_id):
            raise ValueError(f"`forced_bos_token_id` has to be a non-negative token id, but is {bos_token_id!r}.")
        self.bos_token_id = int(bos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != 1:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.bos_token_id] = 0
        return forced


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """When ``len(input_ids) == max_length - 1``: every score ``-inf`` except ``scores[eos] = 0``.

    So the last token a row can generate is an eos (any of them, when several are given).

    Args:
        max_length: the absolute length (prompt included) at which generation stops.
        eos_token_id: an id, a list of ids or a tensor.
    """

    name = "forced_eos_token_id"
    position_dependent = True      # reads the row's length

    def __init__(self, max_length: int, eos_token_id: EosIds, device: Union[str, torch.device] = "cpu"):
        self.max_length = max_length
        self.eos_token_id = id_tensor(eos_token_id, device, "forced_eos_token_id")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.eos_token_id.to(scores.device)] = 0
        return forced


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """After ``start`` new tokens, push eos up: ``s_eos += |s_eos| * (factor ** (len - start') - 1)``.

    ``start' = start + prompt_length``; the penalty applies when ``len > start'`` and only where the
    eos score is finite. ``factor > 1`` makes eos ever more likely; ``factor < 1`` less.

    Args:
        exponential_decay_length_penalty: ``(start, factor)``: an integer >= 0 and a number > 0.
        eos_token_id: an id, a list of ids or a tensor (required).
        input_ids_seq_length: the (padded) prompt length.
    """

    name = "exponential_decay_length_penalty"
    position_dependent = True      # reads the row's length

    def __init__(self, exponential_decay_length_penalty: tuple[int, float], eos_token_id: EosIds,
                 input_ids_seq_length: int):
        start, factor = check_exponential_decay(exponential_decay_length_penalty)
        if eos_token_id is None:
            raise ValueError("`exponential_decay_length_penalty` needs an `eos_token_id` to act on; set one.")
        self.regulation_start = start + input_ids_seq_length
        self.regulation_factor = factor
        self.eos_token_id = id_tensor(eos_token_id, name="eos_token_id")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[-1]
        if length <= self.regulation_start:
            return scores
        eos = self.eos_token_id = self.eos_token_id.to(scores.device)
        eos_scores = scores[:, eos]
        boost = torch.abs(eos_scores) * (pow(self.regulation_factor, length - self.regulation_start) - 1)
        boost = boost.masked_fill(~torch.isfinite(eos_scores), 0.0)
        penalties = torch.zeros_like(scores)
        penalties[:, eos] = boost
        return scores + penalties


def check_exponential_decay(value) -> tuple[int, float]:
    """``(start, factor)`` from ``exponential_decay_length_penalty``, or ValueError naming the range."""
    usage = "`exponential_decay_length_penalty` has to be a pair (start: integer >= 0, factor: number > 0)"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{usage}, but is {value!r}.")
    start, factor = value
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
        raise ValueError(f"{usage}, but start is {start!r}.")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (
            math.isfinite(factor) and factor > 0):
        raise ValueError(f"{usage}, but factor is {factor!r}.")
    return int(start), factor
