"""Run ``model.generate`` beside ``decoding.generate`` and report the first divergence.

For engineers validating a decoding change: both run with the same arguments under the same seed,
with scores recorded, and the report says whether the tokens are identical, where they first
differ (row, step, both tokens), and how far apart the processed scores are before that point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .generation import generate


@dataclass
class Comparison:
    """The outcome of :func:`compare`.

    Attributes:
        identical: the two ``sequences`` are equal (same shape, same ids).
        reference: ``model.generate``'s output (a ``GenerateOutput``-like object).
        ours: ``decoding.generate``'s output.
        first_difference: ``(row, step)`` of the first differing generated token, or None.
        max_score_difference: the largest absolute difference between the finite processed scores of
            the steps both produced before the first difference (0.0 when none were compared).
    """

    identical: bool
    reference: Any
    ours: Any
    first_difference: Optional[tuple[int, int]]
    max_score_difference: float

    def summary(self) -> str:
        """One line: identical, or where and how the two first differ."""
        if self.identical:
            steps = self.ours.sequences.shape[1] - self.prompt_length
            return (f"identical: {self.ours.sequences.shape[0]} row(s) x {steps} new tokens; largest score "
                    f"difference {self.max_score_difference:.2e}")
        if self.first_difference is None:
            return (f"different lengths: reference {tuple(self.reference.sequences.shape)}, ours "
                    f"{tuple(self.ours.sequences.shape)}")
        row, step = self.first_difference
        column = self.prompt_length + step
        return (f"differ at row {row}, new token {step}: reference {int(self.reference.sequences[row, column])}, "
                f"ours {int(self.ours.sequences[row, column])}; largest score difference before it "
                f"{self.max_score_difference:.2e}")

    prompt_length: int = 0


def _first_difference(a: torch.Tensor, b: torch.Tensor, prompt_length: int) -> Optional[tuple[int, int]]:
    width = min(a.shape[1], b.shape[1])
    if a.shape[0] != b.shape[0]:
        return None
    differ = (a[:, :width] != b[:, :width]).nonzero()
    if len(differ) == 0:
        if a.shape[1] != b.shape[1]:
            return (0, width - prompt_length)
        return None
    # the earliest step, then the lowest row
    order = differ[:, 1] * a.shape[0] + differ[:, 0]
    row, column = differ[int(order.argmin())].tolist()
    return (row, column - prompt_length)


def compare(model: Any, input_ids: Optional[torch.LongTensor] = None, seed: int = 0, **kwargs: Any) -> Comparison:
    """Run ``model.generate`` and ``decoding.generate`` with ``kwargs`` after ``torch.manual_seed(seed)``.

    ``kwargs`` are the keyword arguments of ``model.generate`` (``attention_mask``, ``max_new_tokens``,
    ``do_sample``, ...); ``return_dict_in_generate`` and ``output_scores`` are switched on.
    A ``streamer`` and a ``strategy`` are given to our run only: ``compare(model, ids, strategy=my_loop,
    **kw)`` checks your strategy against the reference's own decoding of the same keywords.
    """
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True)
    ours_only = {name: kwargs.pop(name) for name in ("streamer", "strategy", "trace") if name in kwargs}
    torch.manual_seed(seed)
    reference = model.generate(input_ids, **kwargs)
    torch.manual_seed(seed)
    ours = generate(model, input_ids, **ours_only, **kwargs)
    prompt_length = input_ids.shape[1] if input_ids is not None else 1
    identical = (reference.sequences.shape == ours.sequences.shape
                 and torch.equal(reference.sequences, ours.sequences))
    first = None if identical else _first_difference(reference.sequences, ours.sequences, prompt_length)
    compared = len(ours.scores) if first is None else first[1]
    largest = 0.0
    for r, o in zip(reference.scores[:compared], ours.scores[:compared]):
        if r.shape != o.shape:
            continue
        finite = torch.isfinite(r) & torch.isfinite(o)
        if finite.any():
            largest = max(largest, float((r[finite] - o[finite]).abs().max()))
    return Comparison(identical, reference, ours, first, largest, prompt_length)
