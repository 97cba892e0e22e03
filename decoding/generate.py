"""``decoding.generate``: the drop-in replacement for ``model.generate``.

It reads the arguments the way the reference reads them, checks them all before the first forward
pass, builds the pieces of the data flow and hands them to one strategy loop:

    settings -> inputs -> processors + stopping -> runner -> strategy -> result
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Optional

import torch

from .beams.run import check_beam_arguments, run_beam_strategy
from .beams.run import check_beam_arguments, run_beam_strategy
from .config import Settings, resolve_settings
from .inputs import expand_rows, infer_attention_mask, resolve_max_length, special_tokens
from .processors import LogitsProcessorList, PipelineContext, build_pipeline
from .processors.orders import check_order, reorder
from .runner import ModelRunner
from .speculation.setup import build_drafter, check_speculation, is_speculative
from .stopping import StoppingCriteriaList, build_stopping
from .strategies import SequenceState, greedy_search, multinomial, row_seeds, sample, seeded_draw
from .strategies.speculative import speculative_decoding
from .validation import (check_attention_mask, check_input_ids, check_not_yet_implemented,
                         check_processor_inputs, check_settings, input_vocab_size)


class GenerationInterrupted(RuntimeError):
    """Raised when a generation stops on an error or Ctrl-C after tokens were generated.

    ``partial`` holds the sequences generated so far (``[rows, length]`` int64), so nothing is lost;
    the original exception is the ``__cause__``.
    """

    def __init__(self, message: str, partial: torch.LongTensor):
        super().__init__(message)
        self.partial = partial


def _vocab_width(model: Any) -> Optional[int]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None else input_vocab_size(model)


@torch.no_grad()
def generate(
    model: Any,
    input_ids: Optional[torch.LongTensor] = None,
    attention_mask: Optional[torch.LongTensor] = None,
    *,
    generation_config: Any = None,
    logits_processor: Optional[Iterable[Callable]] = None,
    stopping_criteria: Optional[Iterable[Callable]] = None,
    streamer: Any = None,
    tokenizer: Any = None,
    prefix_allowed_tokens_fn: Optional[Callable] = None,
    assistant_model: Any = None,
    negative_prompt_ids: Optional[torch.LongTensor] = None,
    negative_prompt_attention_mask: Optional[torch.LongTensor] = None,
    past_key_values: Any = None,
    seed: Any = None,
    order: Optional[str] = None,
    output_beam_tree: bool = False,
    **kwargs: Any,
):
    """Generate tokens exactly as ``model.generate(input_ids, attention_mask=..., **kwargs)`` would.

    Args:
        model: a ``transformers`` causal language model (put it in ``.eval()`` mode).
        input_ids: ``[batch, prompt_len]`` int64, left-padded. None starts from ``[[bos_token_id]]``.
        attention_mask: ``[batch, prompt_len]`` 0/1; inferred from ``pad_token_id`` when omitted.
        generation_config: a ``transformers.GenerationConfig`` (or dict); keyword arguments override it.
        logits_processor: extra processors, merged into the pipeline as the reference merges them.
        stopping_criteria: extra criteria, merged as the reference merges them.
        streamer: an object with ``put(ids)`` and ``end()`` (see :mod:`decoding.streaming`); with
            ``num_beams > 1`` also a beam streamer (``on_step``; see :mod:`decoding.beams.streaming`).
        tokenizer: the model's tokenizer; needed for ``stop_strings``.
        output_beam_tree: with ``num_beams > 1`` and ``return_dict_in_generate``, record the search
            tree in ``out.trace["beam_tree"]`` (see :mod:`decoding.beams.tree`).
        **kwargs: generation-config fields with the reference's names and defaults
            (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``,
            ``pad_token_id``, ``num_return_sequences``, ``return_dict_in_generate``, ``output_scores``,
            ``output_logits``, ...). See docs/api.md.

    Returns:
        ``[batch * num_return_sequences, length]`` int64 (prompt plus new tokens), or a
        :class:`decoding.GenerateOutput` when ``return_dict_in_generate=True``.

    Raises:
        ValueError / TypeError: bad input, before any forward pass; the message names the argument.
        NotImplementedError: a knob of the reference this version does not implement.
        GenerationInterrupted: an error or Ctrl-C during the loop; ``.partial`` keeps the tokens so far.
    """
    call = prepare_call(model, input_ids, attention_mask, generation_config=generation_config,
                        logits_processor=logits_processor, stopping_criteria=stopping_criteria, tokenizer=tokenizer,
                        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, assistant_model=assistant_model,
                        negative_prompt_ids=negative_prompt_ids,
                        negative_prompt_attention_mask=negative_prompt_attention_mask,
                        past_key_values=past_key_values, seed=seed, order=order, kwargs=kwargs)
    check_beam_arguments(call.settings, streamer, output_beam_tree, seed)
    if call.settings.num_beams > 1:
        return run_beam_strategy(model, call.input_ids, call.attention_mask, call.settings, call.processors,
                                 call.criteria, call.eos, call.pad, streamer, call.max_length, output_beam_tree)
    if is_speculative(call.settings, assistant_model):
        return run_speculative(model, assistant_model, call, streamer, seed)
    return run_strategy(model, call.input_ids, call.attention_mask, call.settings, call.processors, call.criteria,
                        call.pad, streamer, call.max_length, seeds=call.seeds)


class PreparedCall(NamedTuple):
    """Everything ``generate`` builds before the first forward pass (see :func:`prepare_call`)."""

    settings: Settings
    input_ids: torch.LongTensor        # [rows, prompt_len] int64, expanded
    attention_mask: torch.LongTensor   # [rows, prompt_len] 0/1, expanded
    processors: LogitsProcessorList
    context: PipelineContext
    criteria: StoppingCriteriaList
    eos: Optional[torch.Tensor]
    pad: Optional[torch.Tensor]
    max_length: int
    seeds: Optional[list[int]]         # one per row with ``seed=``, else None


def prepare_call(model: Any, input_ids: Optional[torch.LongTensor], attention_mask: Optional[torch.LongTensor], *,
                 generation_config: Any = None, logits_processor: Optional[Iterable[Callable]] = None,
                 stopping_criteria: Optional[Iterable[Callable]] = None, tokenizer: Any = None,
                 prefix_allowed_tokens_fn: Optional[Callable] = None, assistant_model: Any = None,
                 negative_prompt_ids: Optional[torch.LongTensor] = None,
                 negative_prompt_attention_mask: Optional[torch.LongTensor] = None, past_key_values: Any = None,
                 seed: Any = None, order: Any = None, kwargs: Optional[dict] = None) -> PreparedCall:
    """Resolve and check the arguments of :func:`generate` and build its pipeline, without running the model.

    ``generate`` and ``decoding.pipeline`` both go through here, so the pipeline one shows is the
    one the other runs.
    """
    kwargs = dict(kwargs or {})
    settings = resolve_settings(model, generation_config, kwargs)
    check_not_yet_implemented(settings, {
        "prefix_allowed_tokens_fn": prefix_allowed_tokens_fn, "assistant_model": assistant_model,
        "negative_prompt_ids": negative_prompt_ids, "past_key_values": past_key_values,
        "negative_prompt_attention_mask": negative_prompt_attention_mask, "seed": seed, "order": order})
    check_settings(settings)
    check_order(order)

    device = input_ids.device if isinstance(input_ids, torch.Tensor) else torch.device("cpu")
    eos, pad = special_tokens(settings, device)
    if input_ids is None:
        if settings.bos_token_id is None:
            raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided; pass input_ids.")
        input_ids = torch.tensor([[int(settings.bos_token_id)]], dtype=torch.long)
    check_input_ids(input_ids, input_vocab_size(model))
    input_ids = input_ids.long()
    if attention_mask is None:
        attention_mask = infer_attention_mask(input_ids, pad, eos)
    else:
        check_attention_mask(attention_mask, input_ids)
    prompt_length = input_ids.shape[1]
    max_length = resolve_max_length(settings, prompt_length, model)

    rows_per_prompt = max(settings.num_beams, settings.num_return_sequences)
    seeds = row_seeds(seed, input_ids.shape[0] * rows_per_prompt)
    vocab_size = _vocab_width(model)
    check_processor_inputs(settings, vocab_size, input_ids.shape[0], rows_per_prompt, prefix_allowed_tokens_fn,
                           negative_prompt_ids, negative_prompt_attention_mask)
    prompt_ids = input_ids
    input_ids = expand_rows(input_ids, rows_per_prompt)
    attention_mask = expand_rows(attention_mask, rows_per_prompt)

    context = PipelineContext(vocab_size=vocab_size, prompt_length=prompt_length,
                              eos_token_ids=eos, num_beams=settings.num_beams, device=device,
                              max_length=max_length, prompt_ids=prompt_ids, attention_mask=attention_mask,
                              model=model, use_cache=bool(settings.use_cache),
                              prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                              negative_prompt_ids=negative_prompt_ids,
                              negative_prompt_attention_mask=negative_prompt_attention_mask,
                              seeds=seeds, tokenizer=tokenizer)
    processors = reorder(build_pipeline(settings, context, logits_processor or []), order)
    criteria = build_stopping(max_length, eos, settings.max_time, stopping_criteria or [],
                              stop_strings=settings.stop_strings, tokenizer=tokenizer)
    return PreparedCall(settings, input_ids, attention_mask, processors, context, criteria, eos, pad, max_length, seeds)


def pipeline(model: Any, input_ids: Optional[torch.LongTensor] = None, order: Any = "hf",
             **kwargs: Any) -> LogitsProcessorList:
    """The ordered processors ``generate(model, input_ids, order=order, **kwargs)`` would apply.

    Built by the same code as ``generate`` (checks included), without running the model. Print it,
    reorder it (it is a list), or pass it on as ``logits_processor=``.

    Args:
        model: the model ``generate`` would run.
        input_ids: ``[batch, prompt_len]`` int64 (some processors depend on the prompt's length).
        order: ``"hf"`` (default), ``"vllm"``, ``"llama.cpp"``, ``"mlx"`` or a list of names
            (see :mod:`decoding.processors.orders`).
        **kwargs: any other argument of :func:`generate`.
    """
    kwargs.pop("streamer", None)  # accepted as generate accepts it; not part of the pipeline
    attention_mask = kwargs.pop("attention_mask", None)
    named = {name: kwargs.pop(name) for name in _PREPARE_ARGUMENTS if name in kwargs}
    return prepare_call(model, input_ids, attention_mask, order=order, kwargs=kwargs, **named).processors


_PREPARE_ARGUMENTS = ("generation_config", "logits_processor", "stopping_criteria", "tokenizer",
                      "prefix_allowed_tokens_fn", "assistant_model", "negative_prompt_ids",
                      "negative_prompt_attention_mask", "past_key_values", "seed")


def run_speculative(model: Any, assistant_model: Any, call: PreparedCall, streamer: Any, seed: Any = None):
    """Speculative decoding (``assistant_model``, ``prompt_lookup_num_tokens`` or ``assistant_early_exit``).

    Checked before the first forward pass; see docs/speculative.md. With ``seed=`` and sampling, each
    row's tokens equal those of plain seeded sampling (the target's seeded draw decides every token).
    """
    settings = call.settings
    check_speculation(settings, model, assistant_model, call.input_ids.shape[0], streamer, seed, call.processors)
    seeds = call.seeds if settings.do_sample else None          # greedy ignores seed=, as without speculation
    drafter = build_drafter(settings, model, assistant_model, call.attention_mask, call.processors, call.context,
                            call.eos, call.max_length, seeds)
    return_dict = bool(settings.return_dict_in_generate)
    return speculative_decoding(model, call.input_ids, call.attention_mask, drafter, call.processors, call.criteria,
                                call.max_length, bool(settings.do_sample), call.pad, call.eos, streamer,
                                output_scores=return_dict and bool(settings.output_scores),
                                output_logits=return_dict and bool(settings.output_logits),
                                return_dict=return_dict, seeds=seeds)


def run_strategy(model: Any, input_ids: torch.LongTensor, attention_mask: torch.LongTensor,
                 settings: Settings, processors: LogitsProcessorList, criteria: StoppingCriteriaList,
                 pad: Optional[torch.Tensor], streamer: Any, max_length: int, seeds: Optional[list[int]] = None):
    """Run the loop the settings select on prepared (expanded) inputs and return the result.

    ``seeds`` (one per row, from ``seed=``) makes sampling draw from per-row streams keyed by
    (seed, step) instead of torch's global generator; greedy search ignores it.
    """
    return_dict = bool(settings.return_dict_in_generate)
    attentions, hidden_states = bool(settings.output_attentions), bool(settings.output_hidden_states)
    runner = ModelRunner(model, attention_mask, max_length, use_cache=bool(settings.use_cache),
                         output_device=input_ids.device, output_attentions=attentions,
                         output_hidden_states=hidden_states)
    state = SequenceState(input_ids, criteria, pad, streamer,
                          output_scores=return_dict and bool(settings.output_scores),
                          output_logits=return_dict and bool(settings.output_logits),
                          output_attentions=return_dict and attentions,
                          output_hidden_states=return_dict and hidden_states, capacity=max_length)
    try:
        if settings.do_sample:
            sample(runner, input_ids, processors, state,
                   draw=multinomial if seeds is None else seeded_draw(seeds, state))
        else:
            greedy_search(runner, input_ids, processors, state)
    except (Exception, KeyboardInterrupt) as error:
        if state.length == state.prompt_length:
            raise
        raise GenerationInterrupted(
            f"generation stopped after {state.length - state.prompt_length} new tokens by "
            f"{type(error).__name__}: {error}; the tokens so far are in .partial", state.sequences.clone()) from error
    return state.finish(return_dict, cache=runner.cache)
