"""Stopping criteria: ``(input_ids [rows, len] int64, scores) -> done [rows] bool``.

``scores`` is what the reference passes: the tuple of processed scores recorded so far when
``return_dict_in_generate`` and ``output_scores`` are on, otherwise None. A criterion that has an
``eos_token_id`` attribute tells the loop that finished rows must be padded with ``pad_token_id``
(the reference's rule, user criteria included).
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

import torch



class StoppingCriteria:
    """Base class: subclasses return a ``[rows]`` bool tensor, True where a row is done."""

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[tuple] = None, **kwargs) -> torch.BoolTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class MaxLengthCriteria(StoppingCriteria):
    """Done when the sequence (prompt included) reaches ``max_length`` tokens."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, input_ids, scores=None, **kwargs):
        done = input_ids.shape[-1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, device=input_ids.device, dtype=torch.bool)


class MaxTimeCriteria(StoppingCriteria):
    """Done (every row) once ``max_time`` seconds have passed since the criterion was built."""

    def __init__(self, max_time: float, initial_timestamp: Optional[float] = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores=None, **kwargs):
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, device=input_ids.device, dtype=torch.bool)


class EosTokenCriteria(StoppingCriteria):
    """Done where the last token is one of ``eos_token_id`` (an int, a list, or a 1-D tensor)."""

    def __init__(self, eos_token_id):
        if not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.eos_token_id = eos_token_id.reshape(-1)

    def __call__(self, input_ids, scores=None, **kwargs):
        self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -1], self.eos_token_id)


class StoppingCriteriaList(list):
    """Criteria OR-ed together: a row is done when any criterion says so."""

    def __init__(self, criteria: Iterable = ()):
        super().__init__(criteria)

    def __call__(self, input_ids, scores=None, **kwargs) -> torch.BoolTensor:
        done = None
        for criterion in self:
            verdict = criterion(input_ids, scores, **kwargs)
            done = verdict if done is None else done | verdict
        rows = input_ids.shape[0]
        if (isinstance(done, torch.Tensor) and done.dtype == torch.bool and done.shape == (rows,)
                and done.is_contiguous()):
            return done
        # no criterion, or a verdict of another kind (a Python bool, another dtype, shape or layout): as the
        # reference, OR-ed into a [rows] bool tensor of False
        zeros = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        return zeros if done is None else zeros | done

    @property
    def max_length(self) -> Optional[int]:
        for criterion in self:
            if hasattr(criterion, "max_length") and isinstance(criterion.max_length, int):
                return criterion.max_length
        return None

    @property
    def pads_finished_rows(self) -> bool:
        """True when some criterion has ``eos_token_id`` (then finished rows are padded)."""
        return any(hasattr(criterion, "eos_token_id") for criterion in self)

