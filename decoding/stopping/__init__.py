"""Stopping criteria: ``(input_ids [rows, len] int64, scores) -> done [rows] bool``.

- :mod:`.criteria`: the interface, the list that ORs criteria together, max length, max time, eos;
- :mod:`.stop_strings`: stop when the decoded text ends with one of the given strings.

:func:`build_stopping` builds a call's criteria in the reference's order.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from ..merge import merge_by_class
from .criteria import EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StoppingCriteria, StoppingCriteriaList
from .stop_strings import StopStringCriteria

__all__ = ["StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
           "StopStringCriteria", "build_stopping"]


def build_stopping(max_length: int, eos_token_ids: Optional[torch.Tensor], max_time: Optional[float] = None,
                   user_criteria: Iterable = (), stop_strings=None, tokenizer=None) -> StoppingCriteriaList:
    """The reference's criteria, in its order (max length, max time, stop strings, eos), merged with the user's.

    A user criterion whose class name equals a built-in one replaces it; the others are appended.
    """
    built: list = [MaxLengthCriteria(max_length)]
    if max_time is not None:
        built.append(MaxTimeCriteria(max_time))
    if stop_strings is not None:
        if tokenizer is None:
            raise ValueError(
                f"stop_strings={stop_strings!r} needs the model's tokenizer to find the strings in the "
                "tokens: pass tokenizer=... to generate.")
        built.append(StopStringCriteria(tokenizer, stop_strings))
    if eos_token_ids is not None:
        built.append(EosTokenCriteria(eos_token_ids))
    return StoppingCriteriaList(merge_by_class(built, user_criteria))
