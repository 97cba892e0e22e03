"""Per-row random streams keyed by ``(seed, step)``: ``generate(..., seed=[s0, s1, ...])``.

Without ``seed`` every draw uses torch's global generator, exactly as ``model.generate`` does, so a
row's tokens depend on everything else that consumed that generator (the other rows of the batch,
padding, a draft model's draws). With ``seed``, the random numbers that decide row ``r``'s token at
new-token index ``step`` come from a generator seeded by ``mix(seed[r], step, stream)`` alone. So a
row gives the same tokens alone or in a batch, padded or not, with or without speculation, and a
run can be replayed or forked from any step.

The draw is the exponential race (Gumbel-max in another form): with ``E_i ~ Exp(1)`` independent,
``argmax_i p_i / E_i`` is distributed as ``Categorical(p)``; tokens with ``p_i = 0`` never win.
This is also how ``torch.multinomial`` draws one sample on CPU.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import torch

_MASK64 = (1 << 64) - 1

# Separate streams for separate uses within one (seed, step), so they never share numbers.
SAMPLE_STREAM = 0
AUX_STREAM = 1  # for processors that draw their own numbers (e.g. XTC)


def mix(seed: int, step: int, stream: int = SAMPLE_STREAM) -> int:
    """A 63-bit generator seed from ``(seed, step, stream)`` (SplitMix64 finaliser over their sum)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + int(stream) * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def row_generator(seed: int, step: int, stream: int = SAMPLE_STREAM,
                  device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for one row at one new-token index."""
    return torch.Generator(device=device).manual_seed(mix(seed, step, stream))


def seeded_exponentials(shape_per_row: Sequence[int] | int, seeds: Sequence[int], steps: Sequence[int],
                        stream: int = SAMPLE_STREAM, device: torch.device | str = "cpu") -> torch.Tensor:
    """``Exp(1)`` noise ``[rows, *shape_per_row]`` float32, row ``r`` from ``(seeds[r], steps[r], stream)``."""
    shape = (shape_per_row,) if isinstance(shape_per_row, int) else tuple(shape_per_row)
    noise = torch.empty((len(seeds), *shape), dtype=torch.float32, device=device)
    for row, (seed, step) in enumerate(zip(seeds, steps)):
        noise[row].exponential_(generator=row_generator(seed, step, stream, device))
    return noise


def seeded_multinomial(probs: torch.Tensor, seeds: Sequence[int], steps: Sequence[int]) -> torch.LongTensor:
    """One draw per row from ``probs`` ``[rows, vocab]`` (rows sum to 1), keyed by ``(seeds[r], steps[r])``.

    Returns ``[rows]`` int64. ``steps[r]`` is the index of the new token being drawn for row ``r``
    (0 for the first generated token), which does not depend on padding or on the rest of the batch.
    """
    if probs.dim() != 2 or len(seeds) != probs.shape[0] or len(steps) != probs.shape[0]:
        raise ValueError(
            f"seeded_multinomial needs probs [rows, vocab] with one seed and one step per row; got probs "
            f"{tuple(probs.shape)}, {len(seeds)} seeds, {len(steps)} steps.")
    noise = seeded_exponentials(probs.shape[1], seeds, steps, device=probs.device)
    return (probs.float() / noise).argmax(dim=-1)


def row_seeds(seed: Any, rows: int) -> Optional[list[int]]:
    """The per-row seeds of ``generate(seed=...)`` for ``rows = batch * num_return_sequences`` rows.

    ``None`` -> None (torch's global generator, as the reference). An int ``s`` -> ``[s, s+1, ...,
    s+rows-1]``: row ``r`` uses ``s + r``. A list -> itself, one seed per expanded row (the
    ``num_return_sequences`` copies of prompt ``b`` are rows ``b*n .. b*n+n-1``).

    Raises:
        ValueError: ``seed`` is not an int >= 0 or a list of ``rows`` ints >= 0.
    """
    def ok(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0

    if seed is None:
        return None
    if ok(seed):
        return [int(seed) + row for row in range(rows)]
    if isinstance(seed, (list, tuple)) and all(ok(s) for s in seed):
        if len(seed) != rows:
            raise ValueError(f"`seed` has {len(seed)} seeds but the batch has {rows} rows (batch size * "
                             "num_return_sequences); give one seed per row, or one int for all.")
        return [int(s) for s in seed]
    raise ValueError(f"`seed` must be an int >= 0 or a list of ints >= 0 (one per row), but is {seed!r}.")
