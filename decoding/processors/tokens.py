"""Small helpers shared by the processors: token ids as tensors, and checks on them."""

from __future__ import annotations

import numbers
from typing import Any, Optional, Union

import torch

TokenIds = Union[int, list, tuple, torch.Tensor]


def is_token_id(value: Any) -> bool:
    """True for a non-negative Python/numpy integer (``bool`` excluded)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def id_tensor(value: TokenIds, device: Union[str, torch.device] = "cpu", name: str = "token ids",
              negative_ok: bool = False) -> torch.Tensor:
    """An id, a list of ids or a tensor as a 1-D int64 tensor of non-negative ids.

    ``negative_ok``: negative ids pass (they match no token). The reference's eos-holding processors
    (min length, min new tokens, bad words) accept ``eos_token_id=-1``, its way of switching eos off.

    Raises:
        ValueError: an id is negative (unless ``negative_ok``) or not an integer (``name`` says which argument).
    """
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool or (not negative_ok and (value < 0).any()):
            raise ValueError(f"`{name}` has to hold non-negative integer token ids, but is {value!r}.")
        return value.to(device=device, dtype=torch.long).reshape(-1)
    values = [value] if isinstance(value, numbers.Integral) else list(value)
    valid = is_token_id if not negative_ok else (lambda v: is_token_id(v) or is_token_id(-v))
    if not all(valid(v) for v in values):
        raise ValueError(f"`{name}` has to be a non-negative integer token id or a list of them, but is {value!r}.")
    return torch.tensor([int(v) for v in values], dtype=torch.long, device=device)


def vocab_mask(token_ids: torch.Tensor, vocab_size: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[vocab]`` bool: True at the listed ids (ids outside ``[0, vocab)`` are ignored)."""
    return torch.isin(torch.arange(vocab_size, device=device), token_ids.to(device))
