"""Run two decoders (``model.generate`` beside ``decoding.generate`` by default) and report the first divergence.

For engineers validating a decoding change: both run with the same arguments under the same seed,
with scores recorded, and the report says whether the tokens are identical, where they first
differ (row, step, both tokens), and how far apart the processed scores are before that point.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .generation import generate
from .insight.divergence import Divergence, diff


@dataclass
class Comparison:
    """The outcome of :func:`compare`.

    Attributes:
        identical: the two ``sequences`` are equal (same shape, same ids).
        reference: ``model.generate``'s output (a ``GenerateOutput``-like object).
        ours: ``decoding.generate``'s output.
        first_difference: ``(row, step)`` of the first differing generated token, or None.
        max_score_difference: the largest difference between the raw and processed scores of the steps
            both produced before the first difference (0.0 when none were compared; ``inf`` where a
            token was filtered on one side and not on the other).
        divergence: the :class:`~decoding.insight.divergence.Divergence` of the two (``decoding.diff``).
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
        stage = self.divergence.stage if self.divergence is not None else None
        where = "" if stage is None else (f"; scores first differ at stage {stage!r} (new token "
                                          f"{self.divergence.stage_step}, row {self.divergence.stage_row})")
        return (f"differ at row {row}, new token {step}: reference {int(self.reference.sequences[row, column])}, "
                f"ours {int(self.ours.sequences[row, column])}; largest score difference before it "
                f"{self.max_score_difference:.2e}{where}")

    prompt_length: int = 0
    divergence: Optional[Divergence] = None

    def table(self) -> str:
        """The full report: :meth:`summary`, then the divergence's table (each token on both sides)."""
        if self.divergence is None:
            return self.summary()
        return self.summary() + "\n" + self.divergence.table()


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


_UNSET = object()


def compare(model: Any, input_ids: Optional[torch.LongTensor] = None, rng_seed: int = 0, *, against: Any = None,
            seed: Any = _UNSET, **kwargs: Any) -> Comparison:
    """Run two decoders with ``kwargs`` after ``torch.manual_seed(rng_seed)`` each, and report the first divergence.

    The two decoders: ``against`` (the first, "reference" side) and ``decoding.generate`` (the second,
    "ours"). ``against`` is

    - None (default): ``model.generate``, the reference;
    - a dict of keyword arguments: ``decoding.generate`` with ``kwargs`` updated by it ("ours with a
      change"); both runs are then traced, so the report names the first processor stage that differs;
    - a callable ``against(model, input_ids, **kwargs) -> output`` (with ``sequences`` and ``scores``).

    ``kwargs`` are the keyword arguments of ``model.generate`` (``attention_mask``, ``max_new_tokens``,
    ``do_sample``, ...); ``return_dict_in_generate``, ``output_scores`` and ``output_logits`` are
    switched on. A ``streamer``, a ``strategy`` and ``trace`` are given to our run only:
    ``compare(model, ids, strategy=my_loop, **kw)`` checks your strategy against the reference's own
    decoding of the same keywords. ``seed=`` is ``generate``'s per-row seed, given to both runs when
    ``against`` is ours; for the reference it is the old name of ``rng_seed`` (deprecated).

    Returns:
        a :class:`Comparison`; ``.divergence`` is :func:`decoding.insight.divergence.diff` of the two.
    """
    if seed is not _UNSET:
        if isinstance(against, dict):
            kwargs["seed"] = seed
        else:
            warnings.warn("compare(seed=...) is now compare(rng_seed=...): `seed` is generate's per-row seed; "
                          "the old name keeps working for one release.", DeprecationWarning, stacklevel=2)
            rng_seed = seed
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
    ours_only = {name: kwargs.pop(name) for name in ("streamer", "strategy", "trace") if name in kwargs}
    torch.manual_seed(rng_seed)
    if against is None:
        reference = model.generate(input_ids, **kwargs)
    elif isinstance(against, dict):
        reference = generate(model, input_ids, **dict(kwargs, trace=True, **against))
        ours_only.setdefault("trace", True)
    elif callable(against):
        reference = against(model, input_ids, **kwargs)
    else:
        raise TypeError(f"`against` must be None (model.generate), a dict of changed keyword arguments, or a "
                        f"decoder against(model, input_ids, **kwargs); got {type(against).__name__}.")
    torch.manual_seed(rng_seed)
    ours = generate(model, input_ids, **ours_only, **kwargs)
    prompt_length = input_ids.shape[1] if input_ids is not None else 1
    identical = (reference.sequences.shape == ours.sequences.shape
                 and torch.equal(reference.sequences, ours.sequences))
    first = None if identical else _first_difference(reference.sequences, ours.sequences, prompt_length)
    divergence = diff(reference, ours, prompt_length=prompt_length)
    return Comparison(identical, reference, ours, first, divergence.max_score_difference, prompt_length, divergence)
