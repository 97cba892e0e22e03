"""Every exception `decoding` raises of its own, in one place.

Built-in exceptions (``ValueError``, ``TypeError``, ``NotImplementedError``) are used for bad
arguments, as the reference uses them; the classes below add what those cannot say. Each one also
derives from the built-in exception a caller would expect, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


class GenerationInterrupted(RuntimeError):
    """Raised when a generation stops on an error or Ctrl-C after tokens were generated.

    ``partial`` holds the sequences generated so far (``[rows, length]`` int64), so nothing is lost;
    the original exception is the ``__cause__``.
    """

    def __init__(self, message: str, partial: Optional[torch.LongTensor] = None):
        super().__init__(message)
        self.partial = partial


class NonFiniteLogitsError(GenerationInterrupted, ValueError):
    """The model returned NaN or +inf logits (or a row of only -inf): nothing sensible can be chosen.

    ``step`` is the forward that produced them (0: the prompt's, 1: the one after the first new
    token, ...), ``rows`` the rows of the expanded batch that hold them, ``partial`` the sequences so
    far. Usual causes: float16 overflow (load in bfloat16 or float32), a broken checkpoint or
    quantization. ``remove_invalid_values=True`` replaces them and generation goes on, as in the reference.
    """

    def __init__(self, message: str, partial: Optional[torch.LongTensor] = None, step: int = 0,
                 rows: Sequence[int] = ()):
        super().__init__(message, partial)
        self.step = step
        self.rows = list(rows)


def non_finite(scores: torch.Tensor) -> torch.BoolTensor:
    """``[..., vocab]`` float -> ``[...]`` bool: the rows that hold a NaN or +inf, or only -inf (a -inf
    alone is a masked token). One reduction: a row's max is NaN with a NaN, +inf with a +inf, and -inf
    only when every entry is -inf."""
    return ~torch.isfinite(scores.amax(-1))


def all_finite(scores: torch.Tensor) -> bool:
    """``[..., vocab]`` float -> True when no row is :func:`non_finite`: the largest magnitude of the row
    maxima is finite (NaN propagates through both reductions). The check every step runs: three small
    ops and one host read; the rows are looked up only when it fails."""
    maxima = scores.amax(-1)
    return maxima.numel() == 0 or math.isfinite(maxima.abs().max().item())


def require_finite_scores(scores: torch.Tensor) -> None:
    """Before a draw: raise :class:`NonFiniteLogitsError` where processed scores hold NaN or +inf, or only -inf.

    ``scores``: ``[..., vocab]`` float. Such rows give no probabilities (torch would fail with "probability
    tensor contains either inf, nan or element < 0"); the step is filled in by the strategy contract.
    """
    if all_finite(scores):
        return
    flat = scores.reshape(-1, scores.shape[-1])
    bad = non_finite(flat)
    rows = sorted({row // max(1, flat.shape[0] // scores.shape[0]) for row in bad.nonzero().flatten().tolist()})
    raise NonFiniteLogitsError(
        f"the processed scores (after the logits processors) hold NaN, +inf or a row of only -inf in rows {rows}, "
        "so no token can be drawn: a setting overflows float32 (a tiny temperature, a huge penalty or bias) or "
        "removes every token; the sequences so far are in .partial.", step=None, rows=rows)


class GenerationOutOfMemoryError(GenerationInterrupted, MemoryError):
    """The device ran out of memory during generation; the KV cache was freed before this was raised.

    ``partial`` holds the sequences so far (the prompt alone when the prompt's own forward ran out);
    the original ``torch.OutOfMemoryError`` is the ``__cause__``. The same process can generate again.
    """


class GenerationKeyboardInterrupt(KeyboardInterrupt):
    """Ctrl-C during generation, with the sequences so far in ``partial`` (``[rows, length]`` int64).

    Only a ``KeyboardInterrupt`` (not an ``Exception``, so not a :class:`GenerationInterrupted`):
    ``except Exception`` does not swallow Ctrl-C, and the interpreter's handling of it is unchanged;
    ``except KeyboardInterrupt as stop: stop.partial`` gets the tokens.
    """

    def __init__(self, message: str, partial: Optional[torch.LongTensor] = None):
        super().__init__(message)
        self.partial = partial


class ProcessorLifecycleError(RuntimeError):
    """A stateful processor was called for a new step before ``accept()`` reported the last one's tokens.

    It keeps state through ``accept()``, which ``model.generate`` never calls, so it would sample wrong
    there: it fails loudly instead (run it with ``decoding.generate``, or drive ``reset`` / ``accept``).
    """


class UnknownArgumentError(TypeError, ValueError):
    """A keyword that `generate` does not know (usually a typo).

    It is both a ``TypeError`` (what Python raises for an unexpected keyword) and a ``ValueError``
    (what the reference raises), so code written for either keeps working.
    """


class ChatTemplateError(ValueError):
    """The messages cannot be rendered by this tokenizer's chat template; the message says why and what to do."""


class LoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class MissingDependencyError(LoadError, ImportError):
    """A package the requested loading needs (bitsandbytes, accelerate) is not installed."""


class UnsupportedDeviceError(LoadError, ValueError):
    """The requested device does not exist here, or cannot run the requested quantization."""


class ModelNotFoundError(LoadError, FileNotFoundError):
    """Neither a local folder nor a hub id that can be reached (offline, or no such model)."""


class ClosedModelError(RuntimeError):
    """A model was used after :func:`decoding.release` (or ``LoadedModel.close``) freed its weights."""


class BuiltinModelError(RuntimeError):
    """The built-in model could not be fetched or converted; the message says what to run."""


class UnverifiedReferenceWarning(UserWarning):
    """The installed ``transformers`` is not a release ``decoding`` is verified against (``decoding.versions.VERIFIED``).

    Generation still runs; token-for-token equality with that release's ``model.generate`` is untested.
    """
