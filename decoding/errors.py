"""Every exception `decoding` raises of its own, in one place.

Built-in exceptions (``ValueError``, ``TypeError``, ``NotImplementedError``) are used for bad
arguments, as the reference uses them; the classes below add what those cannot say. Each one also
derives from the built-in exception a caller would expect, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import torch


class GenerationInterrupted(RuntimeError):
    """Raised when a generation stops on an error or Ctrl-C after tokens were generated.

    ``partial`` holds the sequences generated so far (``[rows, length]`` int64), so nothing is lost;
    the original exception is the ``__cause__``.
    """

    def __init__(self, message: str, partial: torch.LongTensor):
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
