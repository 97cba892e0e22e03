"""Sequences whose rows grow by different amounts (speculative decoding accepts a different number
of tokens per row).

Row ``r`` is ``buffer[r, :lengths[r]]``: the left-padded prompt (``prompt_len`` columns, shared by
all rows) followed by the row's generated tokens. With one row this is just ``[1, length]``. The
buffer starts with room for the prompt and doubles when a round might not fit.
"""

from __future__ import annotations

import torch

from ...runner import widened


class RaggedSequences:
    """``buffer [rows, width]`` int64 plus ``lengths [rows]`` int64; the last column is a spare one.

    Args:
        prompt_ids: ``[rows, prompt_len]`` int64, left-padded.
        capacity: the longest a row can get (``max_length``); the buffer never doubles past it.
        fill: the id written in unused columns (the pad id, or 0).
    """

    def __init__(self, prompt_ids: torch.LongTensor, capacity: int, fill: int = 0):
        rows, prompt_len = prompt_ids.shape
        self.buffer = prompt_ids.new_full((rows, prompt_len + 1), fill)
        self.buffer[:, :prompt_len] = prompt_ids
        self.lengths = torch.full((rows,), prompt_len, dtype=torch.long, device=prompt_ids.device)
        self.prompt_length = prompt_len
        self.capacity = max(capacity, prompt_len)
        self.fill = fill
        self._longest = prompt_len      # >= every row's length, known without reading lengths from the device

    @property
    def rows(self) -> int:
        return self.buffer.shape[0]

    def row(self, r: int) -> torch.LongTensor:
        """Row ``r``'s sequence, ``[length_r]``."""
        return self.buffer[r, :int(self.lengths[r])]

    def last(self, k: int) -> torch.LongTensor:
        """The last ``k`` tokens of every row, ``[rows, k]``."""
        index = self.lengths[:, None] - k + torch.arange(k, device=self.lengths.device)
        return self.buffer.gather(1, index)

    def aligned(self, extra: torch.LongTensor = None, extra_counts: torch.LongTensor = None) -> torch.LongTensor:
        """Every row right-aligned in one ``[rows, longest]`` tensor, optionally followed by its first
        ``extra_counts[r]`` tokens of ``extra`` ``[rows, m]`` (what processors and criteria read).

        With equal lengths (always true with one row) this is a plain slice plus concatenation; else the
        shorter rows get ``fill`` on the left, like a left-padded batch.
        """
        lengths = self.lengths
        if extra is not None and extra.shape[1]:
            counts = extra_counts if extra_counts is not None else torch.full_like(lengths, extra.shape[1])
        else:
            extra, counts = None, torch.zeros_like(lengths)
        total = lengths + counts
        if bool((total == total[0]).all()) and (extra is None or bool((counts == extra.shape[1]).all())):
            seq = self.buffer[:, :int(lengths[0])]
            return seq if extra is None else torch.cat([seq, extra], dim=1)
        longest = int(total.max())
        joined = torch.cat([self.buffer, extra], dim=1) if extra is not None else self.buffer
        width = self.buffer.shape[1]
        # column c of the output holds the row's token number c - (longest - total[r]); negative: left fill
        column = torch.arange(longest, device=lengths.device)[None, :] - (longest - total)[:, None]
        from_extra = column >= lengths[:, None]
        index = torch.where(from_extra, width + column - lengths[:, None], column).clamp(min=0)
        out = joined.gather(1, index.clamp(max=joined.shape[1] - 1))
        return out.masked_fill(column < 0, self.fill)

    def append(self, tokens: torch.LongTensor, counts: torch.LongTensor) -> None:
        """Append the first ``counts[r]`` of ``tokens[r]`` (``[rows, m]``) to each row."""
        m = tokens.shape[1]
        if m == 0:
            return
        self._make_room(m)
        column = self.lengths[:, None] + torch.arange(m, device=tokens.device)
        write = torch.arange(m, device=tokens.device)[None, :] < counts[:, None]
        column = torch.where(write, column, self.buffer.shape[1] - 1)   # the spare last column absorbs the rest
        self.buffer.scatter_(1, column, torch.where(write, tokens, self.buffer.gather(1, column)))
        self.buffer[:, -1] = self.fill
        self.lengths = self.lengths + counts

    def _make_room(self, m: int) -> None:
        """Widen the buffer (doubling) so that every row can take ``m`` more tokens before the spare column."""
        if self._longest + m >= self.buffer.shape[1]:
            self._longest = int(self.lengths.max())      # the bound says "maybe full": read the real lengths once
            self.buffer = widened(self.buffer, self._longest + m + 1, self.capacity + 1, self.fill)
        self._longest += m

    def padded(self, pad: int) -> torch.LongTensor:
        """``[rows, longest]``: each row left-aligned (prompt first) and right-padded with ``pad``."""
        longest = int(self.lengths.max())
        out = self.buffer[:, :longest].clone()
        beyond = torch.arange(longest, device=out.device)[None, :] >= self.lengths[:, None]
        return out.masked_fill(beyond, pad)
