"""The logits-processor interface, what a processor declares about itself, and the ordered list.

A processor is any callable ``(input_ids, scores) -> scores``:

- ``input_ids``: ``[rows, length]`` int64, the prompt (with its left padding) and every token
  generated so far;
- ``scores``: ``[rows, vocab]`` float32, the next-token scores (raw logits for greedy and sampling,
  log-probabilities inside beam search);
- it returns a new ``[rows, vocab]`` float32 tensor (processors never modify ``scores`` in place).

This is the interface of ``transformers``' ``LogitsProcessor``, so our processors work inside
``model.generate(logits_processor=[...])`` and the reference's work inside our loop.

Beyond the call, a processor may declare what the loops must know about it (:class:`LogitsProcessor`
lists the declarations); :func:`capabilities` reads them off any processor, ours, a user's or the
reference's. Plain callables declare nothing and keep working.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import torch

from ..errors import ProcessorLifecycleError

ProcessorFn = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]

POSITION_REASON = "depends on each row's length or prompt boundary"


@runtime_checkable
class Processor(Protocol):
    """Anything with the reference's ``(input_ids, scores) -> scores`` signature."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor: ...


class LogitsProcessor:
    """Base class for the processors of `decoding`.

    Subclasses implement ``__call__``. ``name`` is a short label used in traces and pipeline listings
    (for ours, the keyword of ``generate`` that builds it).

    Declarations, all False here; a subclass sets the ones true of it as class attributes, or as a
    property when they depend on its arguments:

    - ``stateful``: keeps state from step to step that the loop drives: :meth:`reset` starts it
      over before a generation, :meth:`accept` reports the tokens each step chose. Only stateful
      processors get ``accept``. Speculative decoding refuses them (it scores several positions per
      forward and takes some back), and ``model.generate`` never calls ``accept``: a stateful
      processor should raise :func:`accept_missing` when it is called again before ``accept``.
    - ``follows_beams``: keeps per-row state that must follow beam search's choice of parents;
      beam search calls :meth:`reorder` on it after every step, before ``accept``.
    - ``position_dependent``: reads each row's length or where its prompt ends (a minimum length,
      the generated part, a step counter, n-grams from the row's start). Speculative decoding over
      several rows refuses it: rows of different lengths reach the processors right-aligned in one
      tensor. ``position_reason`` words how, for that error message.
    - ``one_call_per_step``: moves its own state (a cache, a context window) one token per call,
      so it must be called once per generated token; :meth:`reset` starts it over. Speculation
      calls it once per verified position, as the reference does: allowed for one unseeded row only.
    - ``runs_model``: runs the model itself, with its own cache (classifier-free guidance).
      Speculation refuses it when a draft model or early exit drafts.

    Writing ``accept`` (or ``reorder``) in a subclass declares ``stateful`` (``follows_beams``),
    unless the subclass sets that flag itself.
    """

    name: str = "processor"
    stateful: bool = False
    follows_beams: bool = False
    position_dependent: bool = False
    position_reason: str = POSITION_REASON
    one_call_per_step: bool = False
    runs_model: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "accept" in vars(cls) and "stateful" not in vars(cls):
            cls.stateful = True
        if "reorder" in vars(cls) and "follows_beams" not in vars(cls):
            cls.follows_beams = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")

    def reset(self) -> None:
        """Forget any state; called once before a generation starts."""

    def accept(self, token_ids: torch.LongTensor) -> None:
        """Observe the tokens chosen at this step (``[rows]`` int64); only called when ``stateful``."""

    def reorder(self, beam_rows: torch.LongTensor) -> None:
        """Row ``j`` now continues old row ``beam_rows[j]`` (``[rows]`` int); only called when ``follows_beams``."""

    def clone(self) -> "LogitsProcessor":
        """An independent copy, state included, for forking a run (models it refers to are shared)."""
        return copy_state(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def copy_state(processor: Any) -> Any:
    """A deep copy of ``processor`` that shares the ``torch.nn.Module`` objects it holds (weights are not state)."""
    attributes = vars(processor) if hasattr(processor, "__dict__") else {}
    shared = {id(value): value for value in attributes.values() if isinstance(value, torch.nn.Module)}
    return copy.deepcopy(processor, shared)


def accept_missing(processor: Any) -> ProcessorLifecycleError:
    """The error a stateful processor raises when it is called for a new step before ``accept()``."""
    name = getattr(processor, "name", None) or type(processor).__name__
    return ProcessorLifecycleError(
        f"{name} ({type(processor).__name__}) was called for a new step before accept() reported the tokens of "
        "the last one. It keeps state through accept(), which model.generate never calls, so it would sample "
        "wrong there: run it with decoding.generate, or in a loop of your own call reset() before the first "
        "step and accept(token_ids) after each one.")


@dataclass(frozen=True)
class Capabilities:
    """What a processor declares (see :class:`LogitsProcessor` for each field's meaning)."""

    stateful: bool = False
    follows_beams: bool = False
    position_dependent: bool = False
    position_reason: str = POSITION_REASON
    one_call_per_step: bool = False
    runs_model: bool = False


_READS_LENGTH = Capabilities(position_dependent=True)

# The reference's classes declare nothing; the ones that would declare something, by class name.
REFERENCE_CAPABILITIES: dict[str, Callable[[Any], Capabilities]] = {
    "MinLengthLogitsProcessor": lambda p: _READS_LENGTH,
    "MinNewTokensLengthLogitsProcessor": lambda p: _READS_LENGTH,
    "ForcedBOSTokenLogitsProcessor": lambda p: _READS_LENGTH,
    "ForcedEOSTokenLogitsProcessor": lambda p: _READS_LENGTH,
    "ExponentialDecayLengthPenalty": lambda p: _READS_LENGTH,
    "SuppressTokensAtBeginLogitsProcessor": lambda p: _READS_LENGTH,
    "NoRepeatNGramLogitsProcessor": lambda p: _READS_LENGTH,
    "PrefixConstrainedLogitsProcessor": lambda p: _READS_LENGTH,
    "WhisperTimeStampLogitsProcessor": lambda p: _READS_LENGTH,
    "WhisperNoSpeechDetection": lambda p: _READS_LENGTH,
    "AlternatingCodebooksLogitsProcessor": lambda p: _READS_LENGTH,
    "RepetitionPenaltyLogitsProcessor":
        lambda p: Capabilities(position_dependent=getattr(p, "prompt_ignore_length", None) is not None),
    "UnbatchedClassifierFreeGuidanceLogitsProcessor": lambda p: Capabilities(one_call_per_step=True, runs_model=True),
    "SynthIDTextWatermarkLogitsProcessor": lambda p: Capabilities(one_call_per_step=True),
}


def _is_reference(processor: Any) -> bool:
    return type(processor).__module__.split(".")[0] == "transformers"


def capabilities(processor: Processor) -> Capabilities:
    """The declarations of ``processor``.

    - one of the reference's classes (``transformers``): :data:`REFERENCE_CAPABILITIES` by class
      name, nothing declared for the others;
    - anything else (ours, a user's subclass or plain callable): its attributes, False where
      missing; an object that is no :class:`LogitsProcessor` but has an ``accept`` (``reorder``)
      method and no flag is taken as ``stateful`` (``follows_beams``), as a subclass would be.
    """
    if _is_reference(processor):
        lookup = REFERENCE_CAPABILITIES.get(type(processor).__name__)
        return lookup(processor) if lookup is not None else Capabilities()

    def flag(name: str, method: str = "") -> bool:
        value = getattr(processor, name, None)
        if value is None:
            return bool(method) and callable(getattr(processor, method, None))
        return bool(value)

    return Capabilities(stateful=flag("stateful", "accept"), follows_beams=flag("follows_beams", "reorder"),
                        position_dependent=flag("position_dependent"),
                        position_reason=getattr(processor, "position_reason", None) or POSITION_REASON,
                        one_call_per_step=flag("one_call_per_step"), runs_model=flag("runs_model"))


def _keeps_state(processor: Any) -> bool:
    declared = capabilities(processor)
    return declared.stateful or declared.one_call_per_step or callable(getattr(processor, "reset", None))


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
        """``reset()`` on every processor that has one (a stateless processor's does nothing).

        It also notes which members are stateful, so that :meth:`accept`, called every step, does
        not read the declarations again (edit the list before ``reset``, not between the steps).
        """
        for processor in self:
            if callable(getattr(processor, "reset", None)):
                processor.reset()
        self._stateful = [p for p in self if capabilities(p).stateful]

    def accept(self, token_ids: torch.LongTensor) -> None:
        """``accept(token_ids)`` (``[rows]`` int64) on the processors that declare ``stateful``."""
        stateful = getattr(self, "_stateful", None)
        for processor in stateful if stateful is not None else [p for p in self if capabilities(p).stateful]:
            processor.accept(token_ids)

    def clone(self) -> "LogitsProcessorList":
        """An independent copy for forking a run: each processor's ``clone()``; one without it is
        deep-copied when it keeps state (declared, or a ``reset`` method) and shared when it keeps none."""
        return LogitsProcessorList(p.clone() if callable(getattr(p, "clone", None))
                                   else copy_state(p) if _keeps_state(p) else p for p in self)

    def names(self) -> list[str]:
        """Class names in application order (what ``decoding.pipeline`` shows)."""
        return [type(p).__name__ for p in self]

    def keywords(self) -> list[str]:
        """Each processor's ``name`` (for ours, the keyword of ``generate`` that builds it), else its class name."""
        return [getattr(p, "name", None) or type(p).__name__ for p in self]
