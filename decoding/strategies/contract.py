"""The strategy contract: ``strategy(call: PreparedCall) -> GenerateOutput``, one table, one error path.

Every decoding family is a :class:`Strategy`: a ``run(call)`` that generates, and an optional
``check(call)`` that refuses what it cannot do before the first forward pass. ``generate`` picks
one from :data:`STRATEGIES` by the call's mode (greedy and sampling share an entry, as beam search
and beam sampling do), or takes yours (``generate(model, ids, strategy=fn)``), and runs it with
:func:`run_strategy`, the one place where a failure mid-loop becomes
:class:`~decoding.errors.GenerationInterrupted` with the tokens so far in ``.partial``.

A strategy of your own gets exactly what the built-in ones get (docs/strategies.md): the call's
settings, inputs, pipeline, criteria, streamer and per-row seeds, and ``call.new_runner()``,
``call.new_state()``, ``call.chooser(state)``, ``call.finish(state, runner)``. It may return the
:class:`~decoding.outputs.GenerateOutput`, or the finished :class:`~decoding.strategies.state.SequenceState`.

:func:`run_custom_generate` accepts the reference's ``custom_generate=`` callables unchanged.
"""

from __future__ import annotations

import gc
import inspect
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from transformers import GenerationConfig

from ..errors import (GenerationInterrupted, GenerationKeyboardInterrupt, GenerationOutOfMemoryError,
                      NonFiniteLogitsError)
from ..outputs import GenerateOutput, is_output
from ..validation import is_contrastive
from . import contrastive, dola, sampling
from .beam import constrained_run as constrained_beam
from .beam import group_run as group_beam
from .beam import run as beam
from .call import PreparedCall
from .speculative import run as speculative
from .speculative.setup import is_speculative
from .state import SequenceState

StrategyFn = Callable[[PreparedCall], Any]


@dataclass(frozen=True)
class Strategy:
    """A decoding family: ``run(call) -> GenerateOutput`` and an optional ``check(call)`` run before it."""

    name: str
    run: StrategyFn
    check: Optional[Callable[[PreparedCall], None]] = None


SAMPLING = Strategy("greedy / sample", sampling.run)
BEAM = Strategy("beam search", beam.run)
GROUP_BEAM = Strategy("diverse beam search", group_beam.run, group_beam.check)
CONSTRAINED_BEAM = Strategy("constrained beam search", constrained_beam.run, constrained_beam.check)
SPECULATIVE = Strategy("speculative", speculative.run, speculative.check)
CONTRASTIVE = Strategy("contrastive search", contrastive.contrastive_search, contrastive.check)
DOLA = Strategy("DoLa", dola.dola, dola.check)

#: The dispatch table, keyed by :func:`mode`.
STRATEGIES: dict[str, Strategy] = {
    "greedy": SAMPLING, "sample": SAMPLING,
    "beam_search": BEAM, "beam_sample": BEAM,
    "group_beam_search": GROUP_BEAM, "constrained_beam_search": CONSTRAINED_BEAM,
    "speculative": SPECULATIVE,
    "contrastive": CONTRASTIVE, "dola": DOLA,
}


def mode(call: PreparedCall) -> str:
    """The call's mode, a key of :data:`STRATEGIES`: contrastive search and DoLa first (``check_settings`` refused
    their mixes with beams and sampling), then constraints, beam groups, beams, speculation, greedy or sample."""
    settings = call.settings
    if is_contrastive(settings):
        return "contrastive"
    if settings.dola_layers is not None:
        return "dola"
    if settings.constraints is not None or settings.force_words_ids is not None:
        return "constrained_beam_search"
    if settings.num_beams > 1 and settings.num_beam_groups > 1:
        return "group_beam_search"
    if settings.num_beams > 1:
        return "beam_sample" if settings.do_sample else "beam_search"
    if is_speculative(settings, call.assistant_model):
        return "speculative"
    return "sample" if settings.do_sample else "greedy"


def user_strategy(fn: Any) -> Strategy:
    """Wrap ``generate(strategy=fn)``: ``fn(call) -> GenerateOutput | SequenceState``."""
    if isinstance(fn, Strategy):
        return fn
    if not callable(fn):
        raise TypeError(f"`strategy` must be a callable strategy(call) -> GenerateOutput (see docs/strategies.md), "
                        f"got {type(fn).__name__}.")
    return Strategy(getattr(fn, "__name__", type(fn).__name__), fn)


def _partial(call: PreparedCall) -> Optional[torch.LongTensor]:
    """The sequences so far (what ``call.keep_partial`` registered), or None."""
    return call.progress() if call.progress is not None else None


def free_memory(error: BaseException) -> None:
    """Drop what the failed loop still holds (its frames' locals: runner, KV cache) and return it to the device."""
    traceback.clear_frames(error.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


OUT_OF_MEMORY_HINT = ("The KV cache was freed. To fit, try a smaller batch (fewer prompts, num_beams or "
                      "num_return_sequences), a quantized model (decoding.load(..., quantization='4bit')), or a "
                      "shorter max_new_tokens.")


def run_strategy(strategy: Strategy, call: PreparedCall) -> GenerateOutput:
    """Check, then run ``strategy`` on ``call``; a failure in the loop keeps the tokens so far.

    Raises:
        NonFiniteLogitsError: the model returned NaN / inf logits; ``.partial``, ``.step``, ``.rows``.
        GenerationOutOfMemoryError: out of memory (KV cache freed); ``.partial`` (the prompt when the
            prompt's forward ran out).
        GenerationKeyboardInterrupt: Ctrl-C after the first new token; ``.partial``.
        GenerationInterrupted: any other error after the first new token; ``.partial`` holds the sequences
            so far, the original error is the cause. Before the first new token the error is raised as it is.
        TypeError: the strategy returned something other than a ``GenerateOutput`` or ``SequenceState``.
    """
    if strategy.check is not None:
        strategy.check(call)
    try:
        result = strategy.run(call)
    except GenerationInterrupted as error:      # raised in the loop (non-finite logits): add the tokens so far
        if error.partial is None:
            error.partial = _partial(call)
        if isinstance(error, NonFiniteLogitsError) and error.step is None and error.partial is not None:
            error.step = error.partial.shape[1] - call.prompt_length
            error.args = (f"step {error.step}: {error.args[0]}",)
        raise
    except (torch.OutOfMemoryError, MemoryError) as error:
        partial = _partial(call)
        free_memory(error)
        new = 0 if partial is None else partial.shape[1] - call.prompt_length
        raise GenerationOutOfMemoryError(
            f"{strategy.name} ran out of memory after {new} new tokens ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); the sequences so far are in .partial. "
            f"{OUT_OF_MEMORY_HINT}", partial) from error
    except (Exception, KeyboardInterrupt) as error:
        partial = _partial(call)
        new = 0 if partial is None else partial.shape[1] - call.prompt_length
        if new <= 0:
            raise
        message = (f"{strategy.name} stopped after {new} new tokens by {type(error).__name__}: {error}; the tokens "
                   f"so far ({list(partial.shape)}) are in .partial")
        if isinstance(error, KeyboardInterrupt):
            raise GenerationKeyboardInterrupt(message, partial) from error
        raise GenerationInterrupted(message, partial) from error
    if isinstance(result, SequenceState):
        result = call.finish(result)
    if not is_output(result):
        raise TypeError(f"the strategy {strategy.name!r} returned {type(result).__name__}; a strategy returns "
                        "call.finish(state, runner) (a GenerateOutput) or the finished SequenceState.")
    return result


def _custom_keywords(fn: Callable) -> set[str]:
    """Keyword parameters of a ``custom_generate`` callable beyond the reference's decoding-method signature."""
    usual = {"self", "model", "input_ids", "logits_processor", "stopping_criteria", "generation_config",
             "synced_gpus", "streamer"}
    parameters = inspect.signature(fn).parameters.values()
    return {p.name for p in parameters if p.name not in usual
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def split_custom_keywords(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take out of ``kwargs`` the keywords that ``custom_generate=fn`` declares itself (as the reference does)."""
    if fn is None:
        return {}
    if not callable(fn):
        raise NotImplementedError(
            f"custom_generate={fn!r}: a folder's decoding method runs only through generate (with "
            "trust_remote_code=True), a Hub repository never (it runs downloaded code); pass the function itself, or "
            "use strategy= (docs/strategies.md).")
    return {name: kwargs.pop(name) for name in _custom_keywords(fn) if name in kwargs}


def generation_config_of(call: PreparedCall) -> Any:
    """The reference's resolved ``GenerationConfig`` for a ``custom_generate`` callable.

    Every field ``decoding`` resolved, ``max_length`` made absolute, and the private token tensors
    (``_eos_token_tensor``, ``_pad_token_tensor``, ``_bos_token_tensor``) the reference's loops read.
    """
    values = {name: value for name, value in call.settings.values.items() if value is not None}
    values["max_length"] = call.max_length
    values.pop("max_new_tokens", None)
    config = GenerationConfig(**values)
    config._eos_token_tensor = call.eos
    config._pad_token_tensor = call.pad
    bos = call.settings.bos_token_id
    config._bos_token_tensor = None if bos is None else torch.tensor(bos, device=call.input_ids.device)
    return config


def run_custom_generate(fn: Callable, call: PreparedCall, custom: dict[str, Any]) -> Any:
    """Run a ``custom_generate`` callable the way ``model.generate(custom_generate=fn)`` calls it.

    ``fn(model, input_ids, logits_processor=..., stopping_criteria=..., generation_config=..., attention_mask=...,
    use_cache=..., **custom)``, with the expanded ``input_ids``, our pipeline and criteria (the reference's
    classes and ours mix both ways), and the keywords ``fn`` declares itself. Its return value is
    returned as it is, as the reference does.
    """
    return fn(call.model, call.input_ids, logits_processor=call.processors, stopping_criteria=call.criteria,
              generation_config=generation_config_of(call), attention_mask=call.attention_mask,
              use_cache=bool(call.settings.use_cache), **custom)
