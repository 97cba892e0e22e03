"""The prepared call: everything a strategy is handed, built by ``generate`` before the first forward.

Every decoding family, built in or yours, is a function ``strategy(call: PreparedCall) -> GenerateOutput``
(see :mod:`decoding.strategies.contract` and docs/strategies.md). The call carries the resolved
settings, the expanded inputs, the processor pipeline, the stopping criteria, the streamer and the
per-row seeds, plus four helpers that give a loop the rest for free:

- :meth:`PreparedCall.new_runner`: a :class:`~decoding.runner.ModelRunner` for the call's model and mask;
- :meth:`PreparedCall.new_state`: a :class:`~decoding.strategies.state.SequenceState` that records what
  ``return_dict_in_generate`` asks for, streams, and is kept for ``GenerationInterrupted.partial``;
- :meth:`PreparedCall.chooser`: argmax, multinomial or the seeded draw, as the settings say;
- :meth:`PreparedCall.finish`: the reference's output object from a finished state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..config import Settings
from ..model_kwargs import ModelKwargs
from ..outputs import GenerateOutput
from ..processors import LogitsProcessorList, PipelineContext
from ..runner import ModelRunner
from ..stopping import StoppingCriteriaList
from .choosers import Chooser, argmax, multinomial, seeded_draw
from .state import SequenceState


@dataclass
class PreparedCall:
    """One ``generate`` call, resolved and checked, ready for a strategy.

    Attributes:
        model: the ``transformers`` causal LM.
        settings: every generation keyword, resolved as the reference resolves them.
        input_ids: ``[rows, prompt_len]`` int64, left-padded, each prompt repeated
            ``max(num_beams, num_return_sequences)`` times (rows ``b * n .. b * n + n - 1``).
        attention_mask: ``[rows, prompt_len]`` 0/1, expanded the same way; continuing a cache with only
            the new tokens, ``[rows, past + prompt_len]`` (it covers the cached positions too).
        processors: the ordered pipeline, ``(input_ids, scores) -> scores``.
        context: what the processors were built with (vocabulary size, prompt length, eos ids, ...).
        criteria: the stopping criteria, ``(input_ids, scores) -> done [rows] bool``.
        eos: ``[n_eos]`` int64 or None. pad: scalar int64 or None (falls back to ``eos[0]``).
        max_length: the absolute length (prompt included) no row may pass.
        seeds: one seed per row with ``seed=``, else None (torch's global generator).
        streamer: ``put`` / ``end`` (or a beam streamer), or None.
        assistant_model, tokenizer, output_beam_tree: the ``generate`` arguments of those names.
        model_kwargs: the caller's inputs of ``model.forward`` (``token_type_ids``, ``position_ids``, ...),
            rows expanded like ``input_ids``; :meth:`new_runner` passes them on.
        synced_gpus: every rank of ``torch.distributed`` keeps stepping until all are done (greedy and sampling).
        cache: the cache the runner uses (``past_key_values``, or one built from ``cache_implementation``);
            None: the runner's default ``DynamicCache`` (see :mod:`decoding.caches`).
        tracer: records the per-step trace (``generate(trace=...)``), or None; it observes the
            pipeline and every state made by :meth:`new_state` (see ``decoding.insight.trace``).
        compiled: the compiled decode step (``compile=True``, :mod:`decoding.compiled`), or None (eager).
    """

    model: Any
    settings: Settings
    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    processors: LogitsProcessorList
    context: PipelineContext
    criteria: StoppingCriteriaList
    eos: Optional[torch.Tensor]
    pad: Optional[torch.Tensor]
    max_length: int
    seeds: Optional[list[int]] = None
    streamer: Any = None
    assistant_model: Any = None
    tokenizer: Any = None
    output_beam_tree: bool = False
    progress: Optional[Callable[[], torch.LongTensor]] = None
    model_kwargs: Optional[ModelKwargs] = None
    synced_gpus: bool = False
    cache: Any = None
    tracer: Any = None
    compiled: Any = None

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def return_dict(self) -> bool:
        return bool(self.settings.return_dict_in_generate)

    def wants(self, output: str) -> bool:
        """True when ``output`` (``"scores"``, ``"logits"``, ``"attentions"``, ``"hidden_states"``) is returned."""
        return self.return_dict and bool(getattr(self.settings, "output_" + output))

    def keep_partial(self, sequences_so_far: Callable[[], torch.LongTensor]) -> None:
        """Tell ``generate`` how to read the tokens so far if the loop fails (``GenerationInterrupted.partial``)."""
        self.progress = sequences_so_far

    def new_runner(self, **overrides: Any) -> ModelRunner:
        """A model runner for this call: its model, mask, length limit, cache and output options."""
        options = dict(use_cache=bool(self.settings.use_cache), output_device=self.input_ids.device,
                       output_attentions=bool(self.settings.output_attentions),
                       output_hidden_states=bool(self.settings.output_hidden_states), model_kwargs=self.model_kwargs,
                       cache=self.cache, check_finite=not self.settings.remove_invalid_values,
                       decode_forward=self.compiled)
        options.update(overrides)
        return ModelRunner(self.model, self.attention_mask, self.max_length, **options)

    def new_state(self, prompt_ids: Optional[torch.LongTensor] = None, stream: bool = True) -> SequenceState:
        """Sequences, done flags, recorded outputs and streaming for ``prompt_ids`` (default: the call's).

        The state is also what ``GenerationInterrupted.partial`` reads if the loop fails. ``stream=False``:
        the streamer gets nothing from this state (a loop over other rows than the call's, such as k
        branches per prompt, streams its answer at the end with :meth:`stream_result`).
        """
        prompt_ids = self.input_ids if prompt_ids is None else prompt_ids
        state = SequenceState(prompt_ids, self.criteria, self.pad, self.streamer if stream else None,
                              output_scores=self.wants("scores"), output_logits=self.wants("logits"),
                              output_attentions=self.wants("attentions"),
                              output_hidden_states=self.wants("hidden_states"), capacity=self.prompt_length + 1,
                              limit=self.max_length)
        self.keep_partial(lambda: state.sequences.clone())
        state.observer = self.tracer
        return state

    def stream_result(self, sequences: torch.LongTensor) -> None:
        """Stream a result known only at the end (``[rows, length]``, prompt first), as a plain streamer
        expects it: the prompt, then one ``[rows]`` put per new position, then ``end()``."""
        if self.streamer is None:
            return
        self.streamer.put(sequences[:, :self.prompt_length].cpu())
        for position in range(self.prompt_length, sequences.shape[1]):
            self.streamer.put(sequences[:, position].cpu())
        self.streamer.end()

    def chooser(self, state: SequenceState) -> Chooser:
        """How each row's token is picked: argmax (greedy), multinomial, or the seeded draw with ``seed=``."""
        if not self.settings.do_sample:
            return argmax
        return multinomial if self.seeds is None else seeded_draw(self.seeds, state)

    def finish(self, state: SequenceState, runner: Optional[ModelRunner] = None, **extra: Any) -> GenerateOutput:
        """End the stream and build the output (``past_key_values`` from ``runner`` when given)."""
        return state.finish(True, cache=runner.cache if runner is not None else None, **extra)
