"""Classifier-free guidance with its own forward pass on a negative (unconditional) prompt."""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Optional

import torch

from ..versions import CACHE_KEYWORD
from .base import LogitsProcessor


def check_guidance_scale(guidance_scale: float) -> float:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not (
            math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"`guidance_scale` has to be a finite number >= 0 (1 disables guidance), "
                         f"but is {guidance_scale!r}.")
    return guidance_scale


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance for language models (Sanchez et al., 2023, "Stay on topic with
    Classifier-Free Guidance").

    ``out = g * (log_softmax(scores) - u) + u`` where ``u = log_softmax`` of the model's next-token
    logits on the negative prompt followed by the tokens generated so far. The output is therefore
    log-probabilities (every later processor sees them).

    The processor runs the model itself, with its own KV cache: at its first call on the negative
    prompt (default: the last token of each row), then on each newly generated token, calling
    ``model(ids, attention_mask=mask, use_cache=use_cache, past_key_values=cache)`` as the reference
    does (no position ids; ``u`` in the model's dtype). A negative prompt with one row per prompt
    is repeated for the ``num_return_sequences`` rows of that prompt.

    Args:
        guidance_scale: ``g``, a finite number >= 0; 1 gives plain log-probabilities, > 1 pushes
            away from the negative prompt.
        model: the causal LM that produced ``scores``.
        unconditional_ids: ``[rows or batch, neg_len]`` int64, or None for each row's last token.
        unconditional_attention_mask: 0/1 of the same shape, or None for all ones.
        use_cache: False re-feeds the whole negative sequence at every step.
    """

    name = "guidance_scale"
    one_call_per_step = True       # its negative sequence grows one token per call
    runs_model = True              # with its own cache

    def __init__(self, guidance_scale: float, model: Any, unconditional_ids: Optional[torch.LongTensor] = None,
                 unconditional_attention_mask: Optional[torch.LongTensor] = None, use_cache: bool = True):
        self.guidance_scale = check_guidance_scale(guidance_scale)
        self.model = model
        self.unconditional_ids = unconditional_ids
        self.unconditional_attention_mask = unconditional_attention_mask
        self.use_cache = use_cache
        self.reset()

    def __repr__(self) -> str:
        negative = None if self.unconditional_ids is None else tuple(self.unconditional_ids.shape)
        return (f"{type(self).__name__}(guidance_scale={self.guidance_scale!r}, model={type(self.model).__name__}, "
                f"unconditional_ids shape={negative}, use_cache={self.use_cache!r})")

    def reset(self) -> None:
        """Forget the negative sequence and its cache (the next call starts from the negative prompt)."""
        self._ids: Optional[torch.Tensor] = None    # what was fed last (everything, without a cache)
        self._mask: Optional[torch.Tensor] = None   # [rows, seen] ones and zeros
        self._cache: Any = None

    def clone(self) -> "UnbatchedClassifierFreeGuidanceLogitsProcessor":
        twin = copy.copy(self)
        twin._cache = copy.deepcopy(self._cache)
        return twin

    def _unconditional_logits(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """The model's logits for the negative sequence extended by the last token of ``input_ids``."""
        rows = input_ids.shape[0]
        if self._mask is None:                                           # first call
            ids = input_ids[:, -1:] if self.unconditional_ids is None else self.unconditional_ids
            mask = self.unconditional_attention_mask
            mask = torch.ones_like(ids, dtype=torch.long) if mask is None else mask
            if ids.shape[0] < rows:                                      # one row per prompt
                ids = ids.repeat_interleave(rows // ids.shape[0], dim=0)
                mask = mask.repeat_interleave(rows // mask.shape[0], dim=0)
        else:
            last = input_ids[:, -1:]
            mask = torch.cat([self._mask, torch.ones_like(last, dtype=torch.long)], dim=1)
            ids = last if self.use_cache else torch.cat([self._ids, last], dim=1)
        self._ids, self._mask = ids, mask
        out = self.model(ids, attention_mask=mask, use_cache=self.use_cache, **{CACHE_KEYWORD: self._cache})
        self._cache = out.get(CACHE_KEYWORD, None)
        return out.logits

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = torch.nn.functional.log_softmax(scores, dim=-1)
        if self.guidance_scale == 1:
            return scores
        logits = self._unconditional_logits(input_ids)
        unconditional = torch.nn.functional.log_softmax(logits[:, -1], dim=-1).to(scores.device)
        return self.guidance_scale * (scores - unconditional) + unconditional
