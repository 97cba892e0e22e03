"""Replay a traced run exactly, or fork it at a step with one thing changed: counterfactual decoding.

::

    from decoding.replay import record, replay, fork

    run = record(model, ids, attention_mask=mask, max_new_tokens=20, do_sample=True, top_p=0.9)
    again = replay(run)                                  # the same tokens, the same trace
    what_if = fork(run, 5, token=tok.encode(" Paris")[0])  # "what if the model had said X at step 5?"
    cooler = fork(run, 5, temperature=0.3)               # or: other settings from step 5 on
    decoding.diff(run, what_if)                          # step 5, and which stage differs

:func:`record` runs ``decoding.generate`` with a trace and keeps what a replay or a fork needs: the
model, the inputs, the keyword arguments, torch's random state before the run, the output and, for
greedy search and sampling, the model runner (its KV cache). :func:`replay` restores the random state
and runs the same call again. :func:`fork` continues from the saved state at new token ``step``: it
copies the runner (``ModelRunner.fork``), drops the positions after that step (``crop``), rebuilds
the sequences and the stateful processors' state up to it, then decides token ``step`` anew (forced
to ``token``, or chosen under the changed settings or with ``processor`` added) and decodes on as
the original loop does. The fork's trace holds the original's steps before ``step``, so
``decoding.diff(run.trace, fork.trace)`` compares the two from the first token.

Forks are for greedy search and sampling; a beam search or speculative run can be recorded and
replayed, but :func:`fork` refuses it (the search's state is more than one cache per row).
With ``seed=``, the fork's draws keep the original's ``(seed, step)`` keys: a fork with other
settings draws the same random numbers at the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from .generation import generate, prepare_call
from .insight.trace import Trace, Tracer
from .outputs import GenerateOutput
from .processors.base import capabilities
from .runner import ModelRunner
from .strategies.contract import Strategy, mode
from .strategies.sampling import decode

#: keyword arguments a record sets itself
_OWN = ("trace", "return_dict_in_generate", "output_logits", "output_scores", "strategy", "streamer")


@dataclass
class Run:
    """A recorded run: what :func:`replay` and :func:`fork` start from.

    Attributes:
        model, input_ids, attention_mask, kwargs: the call (``kwargs`` without the ones :func:`record` sets).
        rng_state: torch's global random state before the run (``torch.get_rng_state()``).
        output: the ``GenerateOutput`` (raw ``logits`` and processed ``scores`` recorded).
        trace: the run's :class:`~decoding.insight.trace.Trace` (also ``output.trace``).
        runner: the model runner at the end of the run (greedy search and sampling), else None.
        top: candidates per stage in the trace.
    """

    model: Any
    input_ids: Optional[torch.LongTensor]
    attention_mask: Optional[torch.LongTensor]
    kwargs: dict
    rng_state: torch.Tensor
    output: GenerateOutput
    trace: Trace
    runner: Optional[ModelRunner] = None
    top: int = 10

    @property
    def sequences(self) -> torch.LongTensor:
        return self.output.sequences

    @property
    def prompt_length(self) -> int:
        return self.trace.data["prompt_length"]


def _check_kwargs(kwargs: dict) -> None:
    taken = sorted(name for name in _OWN if name in kwargs)
    if taken:
        raise ValueError(f"record() sets {taken} itself (a run is traced and returns its output); leave them out.")


def record(model: Any, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.LongTensor] = None,
           *, top: int = 10, tokenizer: Any = None, **kwargs: Any) -> Run:
    """Run ``decoding.generate(model, input_ids, attention_mask=..., **kwargs)`` traced, keeping what replay and fork need.

    Args:
        top: candidates per stage in the trace. tokenizer: token texts in the trace (also passed to
            ``generate`` when it needs one, e.g. for ``stop_strings``).
        **kwargs: ``generate``'s keyword arguments, except ``trace``, ``return_dict_in_generate``,
            ``output_logits``, ``output_scores``, ``strategy`` and ``streamer``, which a record sets.

    Raises:
        ValueError: one of the keywords a record sets was given.
    """
    _check_kwargs(kwargs)
    if tokenizer is not None:
        kwargs = dict(kwargs, tokenizer=tokenizer)
    call_kwargs = dict(kwargs, return_dict_in_generate=True, output_logits=True, output_scores=True)
    name = mode(prepare_call(model, input_ids, attention_mask, **call_kwargs))     # checks too, before any forward
    kept: dict[str, Any] = {}

    def keep_runner(call):
        """sampling.run, keeping the runner (its cache) for fork()."""
        runner, state = call.new_runner(), call.new_state()
        decode(runner, call.input_ids, call.processors, state, call.chooser(state))
        kept["runner"] = runner
        return call.finish(state, runner)

    rng_state = torch.get_rng_state()
    tracer = Tracer(top=top)
    if name in ("greedy", "sample"):
        out = generate(model, input_ids, attention_mask, strategy=Strategy(name, keep_runner), trace=tracer,
                       **call_kwargs)
    else:
        out = generate(model, input_ids, attention_mask, trace=tracer, **call_kwargs)
    return Run(model, input_ids, attention_mask, dict(kwargs), rng_state, out, out.trace, kept.get("runner"), top)


def replay(run: Run) -> Run:
    """Run ``run``'s call again from the same random state: the same tokens and the same trace, exactly."""
    torch.set_rng_state(run.rng_state)
    return record(run.model, run.input_ids, run.attention_mask, top=run.top, **run.kwargs)


def fork(run: Run, step: int, token: Union[int, Sequence[int], torch.Tensor, None] = None, processor: Any = None,
         **changed: Any) -> Run:
    """Continue ``run`` from new token ``step`` with one thing changed; returns the fork as a :class:`Run`.

    Args:
        run: a :func:`record` of greedy search or sampling.
        step: the new token to decide anew (0 = the first generated token); ``0 <= step <`` steps run.
        token: force this token at ``step`` (one id for every row, or one per row); the steps after it
            are decoded under the run's settings (and ``changed``).
        processor: a processor ``(input_ids, scores) -> scores`` appended to the pipeline from ``step`` on.
        **changed: generation keywords that differ from ``step`` on (``temperature=0.3``, ``top_k=5``,
            ``max_new_tokens=...``: the limit still counts from the original prompt).

    The random draws of an unseeded sampling fork use torch's global generator as it is now (set
    ``torch.manual_seed`` before the fork for a repeatable one); with ``seed=`` they use the run's keys.

    Raises:
        NotImplementedError: the run is not greedy search or sampling, or its pipeline holds a processor
            that must see every step (``one_call_per_step``: guidance, SynthID watermarking).
        ValueError: ``step`` out of range, or neither ``token``, ``processor`` nor a changed keyword given,
            or ``changed`` holds a keyword a record sets itself.
    """
    if run.runner is None:
        raise NotImplementedError(
            f"fork() continues greedy search and sampling; this run is {run.trace.strategy!r} (beam search and "
            "speculation keep more state than one cache per row). replay() works for it; to explore, record a "
            "greedy or sampling run.")
    steps = run.output.sequences.shape[1] - run.prompt_length
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < steps:
        raise ValueError(f"fork(step=...) must be an int in [0, {steps}) (the run generated {steps} tokens), got {step!r}.")
    if token is None and processor is None and not changed:
        raise ValueError("fork() needs something to change: token=..., processor=... or a generation keyword.")
    _check_kwargs(changed)
    kwargs = dict(run.kwargs, **changed)
    if processor is not None:
        kwargs["logits_processor"] = list(kwargs.get("logits_processor") or []) + [processor]
    call = prepare_call(run.model, run.input_ids, run.attention_mask, return_dict_in_generate=True,
                        output_logits=True, output_scores=True, **kwargs)
    if call.settings.num_beams > 1 or call.assistant_model is not None:
        raise NotImplementedError("fork() continues with greedy search or sampling; drop num_beams / assistant_model.")
    refused = [type(p).__name__ for p in call.processors if capabilities(p).one_call_per_step]
    if refused:
        raise NotImplementedError(f"fork() cannot rebuild the state of {refused}: they must see every step from the "
                                  "first. Replay the run with the change instead.")
    prompt_length, history = run.prompt_length, run.output.sequences

    # the runner at `step`: its copy, with the positions fed after token step - 1 dropped
    runner = run.runner.fork()
    runner.crop(runner.length - (prompt_length + step))
    # the sequences and the stateful processors' state up to `step`, without the trace or streaming
    call.processors.reset()
    state = call.new_state()
    for t in range(step):
        state.record(run.output.logits[t], run.output.scores[t], None)
        tokens = state.append(history[:, prompt_length + t])
        call.processors.accept(tokens)
    tracer = Tracer(top=run.top)
    call.tracer = tracer
    tracer.attach(call, run.trace.strategy)
    state.observer = tracer
    choose = call.chooser(state)
    if token is not None:
        choose = _forced_once(token, choose, call.rows)

    logits = run.output.logits[step]
    while True:                                                # sampling.decode's loop, from `step` on
        scores = call.processors(state.sequences, logits)
        state.record(logits, scores, None)
        tokens = state.append(choose(scores))
        call.processors.accept(tokens)
        if state.done:
            break
        logits = runner.step(tokens)
    out = call.finish(state, runner)
    out.trace = tracer.finish(out)
    earlier = [s for s in run.trace.steps if s["step"] < step]
    out.trace.data["steps"] = earlier + out.trace.steps
    out.trace.data["fork"] = {"step": step, "token": None if token is None else _as_list(token, call.rows),
                              "processor": None if processor is None else repr(processor),
                              "changed": {k: repr(v) for k, v in changed.items()}}
    return Run(run.model, run.input_ids, run.attention_mask, kwargs, torch.get_rng_state(), out, out.trace, runner,
               run.top)


def _as_list(token: Any, rows: int) -> list[int]:
    if isinstance(token, torch.Tensor):
        token = token.tolist()
    if isinstance(token, int):
        return [token] * rows
    token = [int(t) for t in token]
    if len(token) != rows:
        raise ValueError(f"fork(token=...) takes one id, or one per row ({rows}); got {len(token)}.")
    return token


def _forced_once(token: Any, choose, rows: int):
    """A chooser that returns ``token`` the first time (without drawing), then defers to ``choose``."""
    forced = torch.tensor(_as_list(token, rows), dtype=torch.long)
    used = []

    def pick(scores: torch.Tensor) -> torch.LongTensor:
        if not used:
            used.append(True)
            return forced.to(scores.device)
        return choose(scores)
    return pick
