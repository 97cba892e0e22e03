"""What `generate` returns when ``return_dict_in_generate=True``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import torch


@dataclass
class GenerateOutput:
    """The reference's ``GenerateDecoderOnlyOutput`` / ``GenerateBeamDecoderOnlyOutput`` fields.

    Attributes:
        sequences: ``[rows, length]`` int64, prompt (with its padding) plus generated ids.
        scores: one ``[rows, vocab]`` float32 tensor per step, after every processor (``-inf`` where
            filtered), when ``output_scores=True``; else None.
        logits: one ``[rows, vocab]`` float32 tensor per step, raw, when ``output_logits=True``.
        sequences_scores: beam search only: ``[rows]`` length-normalised scores.
        beam_indices: beam search only: ``[rows, steps]`` int32 flat beam row each token came from, -1 after the end.
        past_key_values: the KV cache (it holds ``length - 1`` positions: the last token is never fed).
        attentions, hidden_states: as the reference, when requested.
        trace: extra per-step information recorded by `decoding` (speculative acceptance, ...).

    Attribute access, ``out["sequences"]`` and ``"scores" in out`` all work, as with the reference's
    ``ModelOutput``; fields that are None are absent from ``keys()``.
    """

    sequences: torch.LongTensor
    scores: Optional[tuple] = None
    logits: Optional[tuple] = None
    sequences_scores: Optional[torch.FloatTensor] = None
    beam_indices: Optional[torch.IntTensor] = None
    attentions: Optional[tuple] = None
    hidden_states: Optional[tuple] = None
    past_key_values: Any = None
    trace: Optional[dict] = None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()
