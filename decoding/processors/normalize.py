"""Score clean-up: finite values only (``remove_invalid_values``) and log-softmax (``renormalize_logits``)."""

from __future__ import annotations

import torch

from .base import LogitsProcessor


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """Make every score finite: ``nan -> 0``, ``+inf -> finfo.max``, ``-inf -> finfo.min``.

    In the reference's order it runs in the middle of the pipeline, so the ``-inf`` of the
    processors before it (bans, min length, ...) become ``finfo.min`` while later warpers still
    write ``-inf``.
    """

    name = "remove_invalid_values"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finfo = torch.finfo(scores.dtype)
        cleaned = torch.where(scores != scores, 0.0, scores)
        cleaned = torch.where(scores == float("inf"), finfo.max, cleaned)
        return torch.where(scores == -float("inf"), finfo.min, cleaned)


class LogitNormalization(LogitsProcessor):
    """``log_softmax(scores)``: log-probabilities that sum to one after all the other processors.

    ``generate`` puts it last when ``renormalize_logits=True``.
    """

    name = "renormalize_logits"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.log_softmax(dim=-1)
