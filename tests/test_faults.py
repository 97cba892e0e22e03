"""Faults during generation keep what was made, for every strategy.

A hook on the (target) model injects a fault at its forward number ``k`` (0: the prompt's): NaN
logits, ``torch.OutOfMemoryError`` or ``KeyboardInterrupt``. Each time the error is the documented
one (docs/errors.md), ``.partial`` holds the prompt followed by tokens the clean run also made, the
KV cache is gone, and the next call in the same process gives the clean run's output. A streamer, a
stopping criterion and a processor that raise do the same with their own error as the cause; an
iterator streamer's consumer gets the producer's error instead of waiting for ever.
"""

from __future__ import annotations

import gc
import queue
import threading

import pytest
import torch
from transformers import DynamicCache

import decoding
from decoding.errors import (GenerationInterrupted, GenerationKeyboardInterrupt, GenerationOutOfMemoryError,
                             NonFiniteLogitsError)
from decoding.streaming import TextIteratorStreamer
from tests.models import tiny_model
from tests.tokenizer import byte_tokenizer

PROMPT = torch.tensor([[5, 6, 7, 5, 6], [8, 9, 10, 11, 12]])
NEW = 6

STRATEGIES = {
    "greedy": dict(),
    "sampling": dict(do_sample=True, seed=3),
    "beam search": dict(num_beams=2),
    "beam sampling": dict(num_beams=2, do_sample=True),   # seeded through torch.manual_seed in gen()
    "draft model": dict(assistant_model="draft", num_assistant_tokens=2),
    "prompt lookup": dict(prompt_lookup_num_tokens=2),
    "contrastive search": dict(penalty_alpha=0.6, top_k=4),
    "dola": dict(dola_layers="high"),
    "group beam search": dict(num_beams=2, num_beam_groups=2, diversity_penalty=0.5),
    "constrained beam search": dict(num_beams=2, force_words_ids=[[9]]),
}


def arguments(name: str) -> dict:
    kwargs = dict(STRATEGIES[name], max_new_tokens=NEW, eos_token_id=None)
    if kwargs.get("assistant_model") == "draft":
        kwargs["assistant_model"] = tiny_model("llama", seed=1)
    return kwargs


def prompt_for(name: str) -> torch.Tensor:
    return PROMPT[:1] if name == "draft model" else PROMPT   # speculation with a draft model: batch 1 here


class Inject:
    """Make the model's forward number ``at`` (0-based) return NaN logits in row ``row``, or raise ``error``."""

    def __init__(self, model, at: int, error: BaseException = None, row: int = 0):
        self.model, self.at, self.error, self.row, self.calls = model, at, error, row, 0

    def __enter__(self):
        self.handles = [self.model.register_forward_pre_hook(self.before),
                        self.model.register_forward_hook(self.after)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def before(self, module, args):
        if self.calls == self.at and self.error is not None:
            self.calls += 1
            raise self.error

    def after(self, module, args, output):
        if self.calls == self.at and self.error is None:
            output.logits[self.row] = float("nan")
        self.calls += 1
        return output


def gen(model, name: str, **extra) -> torch.Tensor:
    torch.manual_seed(0)
    prompt = prompt_for(name)
    if "streamer" in extra and name in ("draft model", "prompt lookup"):
        prompt = prompt[:1]   # speculation streams one row only
    return decoding.generate(model, prompt, **arguments(name), **extra)


def clean_run(name: str) -> torch.Tensor:
    return gen(tiny_model("llama"), name)


def live_caches() -> int:
    gc.collect()
    return sum(isinstance(o, DynamicCache) for o in gc.get_objects())


def check_partial(partial: torch.Tensor, name: str, clean: torch.Tensor, at_least: int) -> None:
    """The prompt, then tokens the clean run made too (strategies whose rows do not reorder)."""
    prompt = prompt_for(name)
    assert partial.dtype == torch.long and partial.dim() == 2
    rows = partial.shape[0] // prompt.shape[0]
    assert torch.equal(partial[:, :prompt.shape[1]], prompt.repeat_interleave(rows, dim=0))
    new = partial.shape[1] - prompt.shape[1]
    assert at_least <= new < NEW
    if "beam" not in name:   # a beam's prefix may still change; every other strategy keeps its tokens
        assert torch.equal(partial, clean[:, :partial.shape[1]])


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("at", [0, 2])
def test_nan_logits(name, at):
    model, clean = tiny_model("llama"), clean_run(name)
    before = live_caches()
    with Inject(model, at, row=0), pytest.raises(NonFiniteLogitsError) as caught:
        gen(model, name)
    error = caught.value
    assert isinstance(error, GenerationInterrupted) and isinstance(error, ValueError)
    assert f"step {error.step}" in str(error) and "rows [0" in str(error) and "remove_invalid_values" in str(error)
    assert error.rows[0] == 0
    check_partial(error.partial, name, clean, at_least=min(at, 1) if "speculative" not in name else 0)
    if name in ("greedy", "sampling"):
        assert error.step == at and error.partial.shape[1] - PROMPT.shape[1] == at
    del error, caught
    assert live_caches() == before
    assert torch.equal(clean_run(name), clean)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("at", [0, 2])
def test_out_of_memory(name, at):
    model, clean = tiny_model("llama"), clean_run(name)
    before = live_caches()
    with Inject(model, at, torch.OutOfMemoryError("CUDA out of memory (injected)")), \
            pytest.raises(GenerationOutOfMemoryError) as caught:
        gen(model, name)
    error = caught.value
    assert isinstance(error, MemoryError) and isinstance(error.__cause__, torch.OutOfMemoryError)
    for words in ("out of memory", "KV cache was freed", "smaller batch", "quantiz", "max_new_tokens"):
        assert words in str(error), words
    check_partial(error.partial, name, clean, at_least=0 if at == 0 else 1)
    if at == 0:
        assert error.partial.shape[1] == PROMPT.shape[1]
    del error, caught
    assert live_caches() == before, "the KV cache outlived the error"
    assert torch.equal(clean_run(name), clean), "the next call did not succeed"


@pytest.mark.parametrize("name", STRATEGIES)
def test_keyboard_interrupt(name):
    model, clean = tiny_model("llama"), clean_run(name)
    with Inject(model, 2, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt) as caught:
        gen(model, name)
    error = caught.value
    assert isinstance(error, GenerationKeyboardInterrupt) and not isinstance(error, Exception)
    check_partial(error.partial, name, clean, at_least=1)
    assert torch.equal(clean_run(name), clean)


def test_keyboard_interrupt_in_the_prompts_forward_stays_a_plain_keyboard_interrupt():
    with Inject(tiny_model("llama"), 0, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt) as caught:
        decoding.generate(tiny_model("llama"), PROMPT, max_new_tokens=NEW)
    assert type(caught.value) is KeyboardInterrupt


def test_remove_invalid_values_goes_on_through_nan_logits():
    model = tiny_model("llama")
    with Inject(model, 2, row=1):
        out = decoding.generate(model, PROMPT, max_new_tokens=NEW, remove_invalid_values=True)
    assert out.shape == (2, PROMPT.shape[1] + NEW)


class Boom(Exception):
    pass


class RaisingStreamer:
    def __init__(self, at: int):
        self.at, self.puts = at, 0

    def put(self, value):
        self.puts += 1
        if self.puts == self.at:
            raise Boom("streamer")

    def end(self):
        pass


def raising_at(at: int, name: str, answer):
    """A hook of (input_ids, scores) that raises Boom(name) at its ``at``-th call, else returns answer(...)."""
    calls = []

    def hook(input_ids, scores):
        calls.append(1)
        if len(calls) == at:
            raise Boom(name)
        return answer(input_ids, scores)
    return hook


def raising_criterion(at: int):
    return raising_at(at, "criterion", lambda input_ids, scores: torch.zeros(input_ids.shape[0], dtype=torch.bool))


def raising_processor(at: int):
    return raising_at(at, "processor", lambda input_ids, scores: scores)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("what", ["streamer", "criterion", "processor"])
def test_a_raising_callback_propagates_after_cleanup(name, what):
    model, clean = tiny_model("llama"), clean_run(name)
    before = live_caches()
    extra = {"streamer": dict(streamer=RaisingStreamer(3)),
             "criterion": dict(stopping_criteria=[raising_criterion(3)]),
             "processor": dict(logits_processor=[raising_processor(3)])}[what]
    with pytest.raises(Exception) as caught:
        gen(model, name, **extra)
    error = caught.value
    cause = error if isinstance(error, Boom) else error.__cause__
    assert isinstance(cause, Boom) and str(cause) == what
    if isinstance(error, GenerationInterrupted):
        assert torch.equal(error.partial[:, :PROMPT.shape[1]][:1], PROMPT[:1])
    del error, caught, cause
    assert live_caches() == before
    assert torch.equal(clean_run(name), clean)


# --- the iterator streamer's consumer never hangs ----------------------------------------------------

def test_iterator_streamer_timeout_is_honoured():
    streamer = TextIteratorStreamer(byte_tokenizer(), timeout=0.05)
    with pytest.raises(queue.Empty):
        next(iter(streamer))


@pytest.mark.parametrize("fault", ["bad input", "nan"])
def test_the_producers_error_is_raised_in_the_consumer(fault):
    model = tiny_model("llama")
    streamer = TextIteratorStreamer(byte_tokenizer(), timeout=30)
    kwargs = dict(max_new_tokens=NEW, streamer=streamer)
    if fault == "bad input":
        kwargs["top_p"] = 7.0
    errors = []

    def produce():
        try:
            with Inject(model, 2) if fault == "nan" else _nothing():
                decoding.generate(model, PROMPT[:1], **kwargs)
        except BaseException as error:   # noqa: BLE001 (the thread keeps it for the assertion)
            errors.append(error)

    thread = threading.Thread(target=produce)
    thread.start()
    expected = ValueError if fault == "bad input" else NonFiniteLogitsError
    with pytest.raises(expected) as caught:
        for _ in streamer:
            pass
    thread.join()
    assert errors and caught.value is errors[0]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
