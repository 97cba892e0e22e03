"""The logits-processor interface and the ordered list that applies processors in turn.

A processor is any callable ``(input_ids, scores) -> scores``:

- ``input_ids``: ``[rows, length]`` int64, the prompt (with its left padding) and every token
  generated so far;
- ``scores``: ``[rows, vocab]`` float32, the next-token scores (raw logits for greedy and sampling,
  log-probabilities inside beam search);
- it returns a new ``[rows, vocab]`` float32 tensor (processors never modify ``scores`` in place).

This is the interface of ``transformers``' ``LogitsProcessor``, so our processors work inside
``model.generate(logits_processor=[...])`` and the reference's work inside our loop.

Stateful processors may also offer the optional lifecycle of :class:`StatefulProcessor`
(``reset``, ``accept``, ``clone``); plain callables without it keep working.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Protocol, runtime_checkable

import torch

ProcessorFn = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]


@runtime_checkable
class Processor(Protocol):
    """Anything with the reference's ``(input_ids, scores) -> scores`` signature."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor: ...


class LogitsProcessor:
    """Base class for the processors of `decoding`.

    Subclasses implement ``__call__``. ``name`` is a short label used in traces and pipeline listings.
    The lifecycle methods below are no-ops for stateless processors.
    """

    name: str = "processor"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")

    def reset(self) -> None:
        """Forget any state; called once before a generation starts."""

    def accept(self, token_ids: torch.LongTensor) -> None:
        """Observe the tokens chosen at this step (``[rows]`` int64)."""

    def clone(self) -> "LogitsProcessor":
        """An independent copy, for beams or speculative branches that fork the state."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class LogitsProcessorList(list):
    """An ordered list of processors, applied first to last.

    It is a plain ``list``: build it, print it, reorder it, then call it like one processor.
    """

    def __init__(self, processors: Iterable[ProcessorFn] = ()):
        super().__init__(processors)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores

    def reset(self) -> None:
        for processor in self:
            if hasattr(processor, "reset"):
                processor.reset()

    def accept(self, token_ids: torch.LongTensor) -> None:
        for processor in self:
            if hasattr(processor, "accept"):
                processor.accept(token_ids)

    def clone(self) -> "LogitsProcessorList":
        return LogitsProcessorList(p.clone() if hasattr(p, "clone") else p for p in self)

    def names(self) -> list[str]:
        """Class names in application order (what ``decoding.pipeline`` shows)."""
        return [type(p).__name__ for p in self]
