"""Inputs: special tokens, the attention mask, left padding, row expansion and lengths.

Each function does one step of the reference's preparation (``../shared/hf_generate.md`` section 0)
so that the prompt reaching the runner is the one ``model.generate`` would build.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import torch

from .config import Settings


def as_id_tensor(value: Any, device: torch.device) -> Optional[torch.Tensor]:
    """An id, a list of ids or a tensor as a 1-D int64 tensor (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.long).reshape(-1)
    if isinstance(value, int):
        value = [value]
    value = list(value)
    if not value:
        return None
    return torch.tensor(value, dtype=torch.long, device=device)


def special_tokens(settings: Settings, device: torch.device) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(eos [n_eos] int64 or None, pad scalar int64 or None)``; pad falls back to ``eos[0]``."""
    eos = as_id_tensor(settings.eos_token_id, device)
    pad = settings.pad_token_id
    if isinstance(pad, torch.Tensor):
        pad = pad.reshape(-1)[0].to(device)
    elif pad is not None:
        pad = torch.tensor(int(pad), dtype=torch.long, device=device)
    if pad is None and eos is not None:
        pad = eos[0]
    return eos, pad


def infer_attention_mask(input_ids: torch.LongTensor, pad: Optional[torch.Tensor],
                         eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """The reference's mask when none is given: ``ids != pad`` if pad occurs and is not an eos, else ones."""
    if pad is not None and bool((input_ids == pad).any()) and (eos is None or not bool(torch.isin(pad, eos))):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def expand_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """Repeat each row ``times`` times in place order: ``b0, b0, b1, b1, ...``."""
    return tensor if times == 1 else tensor.repeat_interleave(times, dim=0)


def resolve_max_length(settings: Settings, prompt_length: int, model: Any) -> int:
    """The absolute length (prompt included) at which generation stops, as the reference computes it."""
    if settings.max_new_tokens is not None:
        max_length = settings.max_new_tokens + prompt_length
    elif settings.has_default_max_length:
        max_length = settings.max_length + prompt_length
        text_config = model.config.get_text_config(decoder=True) if hasattr(model, "config") else None
        limit = getattr(text_config, "max_position_embeddings", None)
        if limit is not None:
            max_length = min(max_length, limit)
        warnings.warn(
            f"Neither max_new_tokens nor max_length was set: generating at most {max_length - prompt_length} "
            f"new tokens (max_length={max_length}), the reference's default. Pass max_new_tokens to choose.",
            UserWarning, stacklevel=3)
    else:
        max_length = settings.max_length
    if prompt_length >= max_length:
        raise ValueError(
            f"Input length of input_ids is {prompt_length}, but `max_length` is set to {max_length}, so "
            "nothing can be generated; set max_new_tokens (or a larger max_length).")
    return max_length


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Left-pad lists of ids into ``(input_ids, attention_mask)``, both ``[batch, longest]`` int64."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad needs at least one sequence and no empty sequence.")
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, longest - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, longest - len(seq):] = 1
    return ids, mask
