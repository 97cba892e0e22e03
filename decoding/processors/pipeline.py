"""Build the ordered processor pipeline for one call, in the reference's order.

The order (``../shared/hf_generate.md`` section 2.1, ``model.generate`` in transformers 5.23):

1. the non-warper processors (penalties, bans, forced tokens, ...), then
2. the user's ``logits_processor=[...]``: a user processor whose class name equals a built-in
   one replaces it in place, the others are appended here, then
3. the warpers, only when sampling: temperature, top-h, top-k, top-p, min-p, typical, epsilon, eta,
4. watermarking, then ``renormalize_logits`` last.

The result is a :class:`LogitsProcessorList`: inspect it, reorder it, or pass your own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from ..merge import merge_by_class
from .base import LogitsProcessorList, ProcessorFn
from .warpers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


@dataclass
class PipelineContext:
    """What processors need to know about the call beyond the knobs.

    Attributes:
        vocab_size: width of the scores, ``[rows, vocab]``.
        prompt_length: padded prompt length (the reference's ``input_ids_length``).
        eos_token_ids: ``[n_eos]`` int64 or None.
        num_beams: 1 for greedy/sampling.
        device: where the bookkeeping (and so the processors) runs: the device of ``input_ids``.
    """

    vocab_size: int
    prompt_length: int
    eos_token_ids: Optional[torch.Tensor]
    num_beams: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def min_tokens_to_keep(self) -> int:
        """1 without beams; with beam sampling ``n_eos + 1`` (2 without eos), as the reference."""
        if self.num_beams <= 1:
            return 1
        return (len(self.eos_token_ids) if self.eos_token_ids is not None else 1) + 1


def _processors(settings, context: PipelineContext) -> list[ProcessorFn]:
    """The non-warper processors, in the reference's order."""
    return []


def _warpers(settings, context: PipelineContext) -> list[ProcessorFn]:
    """The sampling warpers, in the reference's order (only built when ``do_sample``)."""
    keep = context.min_tokens_to_keep
    warpers: list[ProcessorFn] = []
    if settings.temperature is not None and settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k is not None and settings.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=settings.top_k, min_tokens_to_keep=keep))
    if settings.top_p is not None and settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=settings.top_p, min_tokens_to_keep=keep))
    return warpers


def build_pipeline(settings, context: PipelineContext,
                   user_processors: Iterable[ProcessorFn] = ()) -> LogitsProcessorList:
    """The processors a call with these settings applies, in order."""
    pipeline = merge_by_class(_processors(settings, context), user_processors)
    if settings.do_sample:
        pipeline.extend(_warpers(settings, context))
    return LogitsProcessorList(pipeline)
