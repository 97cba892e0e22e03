"""``decoding.generate``: the drop-in replacement for ``model.generate``.

It reads the arguments the way the reference reads them, checks them all before the first forward
pass, builds the pieces of the data flow into one :class:`~decoding.strategies.call.PreparedCall`
and hands it to one strategy from the table (:mod:`decoding.strategies.contract`), or to yours:

    resolve -> check -> prepare -> dispatch -> result
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

from .caches import (STATIC, build_cache, check_cache_request, check_continuation, is_static, normalized, past_length,
                     take_cache)
from .compiled import bucket_length, check_compile_request, compile_options, compiled_step, wants_compile
from .config import resolve_settings
from .insight.trace import Tracer
from .inputs import (expand_rows, infer_attention_mask, prepare_embeds, resolve_max_length, special_tokens,
                     take_inputs)
from .knobs import KNOBS, REFUSED
from .model_kwargs import ModelKwargs, split_model_kwargs
from .processors import LogitsProcessorList, PipelineContext, build_pipeline
from .processors.orders import check_order, reorder
from .runner import model_device
from .seeding import row_seeds
from .stopping import build_stopping
from .streaming import notify_failure
from .strategies.beam.run import check_beam_arguments
from .strategies.call import PreparedCall
from .strategies.contract import (SPECULATIVE, STRATEGIES, mode, run_custom_generate, run_strategy, split_custom_keywords,
                                  user_strategy)
from .strategies.custom_folder import call_folder, hub_refusal, is_folder, load_folder
from .validation import (check_attention_mask, check_call_objects, check_devices, check_input_ids,
                         check_not_yet_implemented, check_processor_inputs, check_settings, check_special_tokens,
                         input_vocab_size)


def _vocab_width(model: Any) -> Optional[int]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None else input_vocab_size(model)


def _config_names(generation_config: Any) -> set:
    """The fields a ``generation_config`` argument sets (not None)."""
    values = generation_config if isinstance(generation_config, dict) else getattr(generation_config, "__dict__", {})
    return {name for name, value in values.items() if value is not None}


@torch.no_grad()
def generate(model: Any, input_ids: Optional[torch.LongTensor] = None, /,
             attention_mask: Optional[torch.LongTensor] = None,
             *, strategy: Any = None, custom_generate: Any = None, trace: Any = None, **kwargs: Any):
    """Generate tokens exactly as ``model.generate(input_ids, attention_mask=..., **kwargs)`` would.

    Args:
        model: a ``transformers`` causal language model (put it in ``.eval()`` mode).
        input_ids: ``[batch, prompt_len]`` int64, left-padded. None starts from ``[[bos_token_id]]``. Given
            as a keyword, ``input_ids=`` or ``inputs=`` (the reference's name); given twice, a ValueError.
        attention_mask: ``[batch, prompt_len]`` 0/1; inferred from ``pad_token_id`` when omitted.
        strategy: your own decoding loop, ``strategy(call) -> GenerateOutput`` (docs/strategies.md);
            it gets the resolved settings, pipeline, criteria, streamer and seeds of this call.
        custom_generate: a callable written for ``model.generate(custom_generate=...)``, or a local folder
            holding ``custom_generate/generate.py`` (with ``trust_remote_code=True``; see
            :mod:`decoding.strategies.custom_folder`; a Hub repository is refused); a callable is called
            the way the reference calls it, and its result returned as it is.
        trace: True (or a :class:`~decoding.insight.trace.Tracer`) records the per-step trace in
            ``out.trace`` (needs ``return_dict_in_generate=True``; a ``Tracer`` also keeps it in
            ``tracer.trace``). Off by default, and then free. See docs/inspecting.md.
        **kwargs: every other argument of :func:`prepare_call`: ``generation_config``,
            ``logits_processor``, ``stopping_criteria``, ``streamer``, ``tokenizer``,
            ``assistant_model``, ``seed``, ``order``, ``output_beam_tree``, ..., and the
            generation-config fields with the reference's names and defaults (``max_new_tokens``,
            ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``, ``pad_token_id``,
            ``num_return_sequences``, ``return_dict_in_generate``, ``output_scores``, ...). See docs/api.md.

    Returns:
        ``[batch * num_return_sequences, length]`` int64 (prompt plus new tokens), or a
        :class:`decoding.GenerateOutput` when ``return_dict_in_generate=True``.

    Raises:
        ValueError / TypeError: bad input, before any forward pass; the message names the argument.
        NotImplementedError: a knob of the reference this version does not implement.
        GenerationInterrupted: an error during the loop; ``.partial`` keeps the tokens so far. Its
            subclasses ``NonFiniteLogitsError`` (NaN / inf logits: ``.step``, ``.rows``) and
            ``GenerationOutOfMemoryError`` (KV cache freed, a hint); Ctrl-C gives
            ``GenerationKeyboardInterrupt`` (a ``KeyboardInterrupt`` with ``.partial``). docs/errors.md.
        Whatever it raises, a streamer with ``on_error`` (``TextIteratorStreamer``) gets it first.
    """
    try:
        if strategy is not None and custom_generate is not None:
            raise ValueError("both strategy= and custom_generate= were given; pass one of them (docs/strategies.md).")
        if custom_generate is not None and not callable(custom_generate):   # a folder (or a refused Hub repository)
            if not is_folder(custom_generate):
                raise hub_refusal(custom_generate)
            function = load_folder(custom_generate, kwargs.pop("trust_remote_code", None))
            return call_folder(function, model, input_ids, attention_mask, kwargs)
        custom = split_custom_keywords(custom_generate, kwargs)
        call = prepare_call(model, input_ids, attention_mask, **kwargs)
        tracer = make_tracer(trace, call.return_dict, custom_generate)
        if custom_generate is not None:
            return run_custom_generate(custom_generate, call, custom)
        chosen = user_strategy(strategy) if strategy is not None else STRATEGIES[mode(call)]
        if call.synced_gpus and strategy is None and mode(call) not in ("greedy", "sample"):
            raise NotImplementedError(f"synced_gpus=True with {mode(call)}: decoding keeps ranks in step for greedy search "
                                      "and sampling only; drop synced_gpus (an unsharded model needs none).")
        if call.synced_gpus and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError("synced_gpus=True keeps the ranks of a torch.distributed process group in step, but none "
                             "is initialised; call torch.distributed.init_process_group(...) in every rank first, or "
                             "drop synced_gpus (a model that is not sharded across ranks needs none).")
        if tracer is not None:
            call.tracer = tracer
            tracer.attach(call, chosen.name if strategy is not None else mode(call), wrap=chosen is not SPECULATIVE)
        out = run_strategy(chosen, call)
        if tracer is not None:
            out.trace = tracer.finish(out)
        return out if call.return_dict else out.sequences
    except BaseException as error:   # an iterator streamer's consumer (another thread) gets the error, not a hang
        notify_failure(kwargs.get("streamer"), error)
        raise


def make_tracer(trace: Any, return_dict: bool, custom_generate: Any = None) -> Optional[Tracer]:
    """The tracer of ``generate(trace=...)``: None (off), a new :class:`Tracer` for True, or the one given."""
    if trace is None or trace is False:
        return None
    if custom_generate is not None:
        raise ValueError("trace= does not follow a custom_generate= callable (it runs the reference's own loop); "
                         "use strategy= for a loop of yours, which is traced.")
    if trace is True:
        if not return_dict:
            raise ValueError("trace=True puts the trace in out.trace, so it needs return_dict_in_generate=True; set "
                             "it, or pass trace=decoding.insight.Tracer() and read tracer.trace after the call.")
        return Tracer()
    if isinstance(trace, Tracer):
        return trace
    raise TypeError(f"`trace` must be True, False or a decoding.insight.Tracer, got {type(trace).__name__}.")


def prepare_call(model: Any, input_ids: Optional[torch.LongTensor] = None, /,
                 attention_mask: Optional[torch.LongTensor] = None, *,
                 generation_config: Any = None, logits_processor: Optional[Iterable[Callable]] = None,
                 stopping_criteria: Optional[Iterable[Callable]] = None, streamer: Any = None, tokenizer: Any = None,
                 prefix_allowed_tokens_fn: Optional[Callable] = None, assistant_model: Any = None,
                 negative_prompt_ids: Optional[torch.LongTensor] = None,
                 negative_prompt_attention_mask: Optional[torch.LongTensor] = None, past_key_values: Any = None,
                 inputs_embeds: Optional[torch.FloatTensor] = None, synced_gpus: Optional[bool] = None,
                 seed: Any = None, order: Any = None, output_beam_tree: bool = False,
                 **kwargs: Any) -> PreparedCall:
    """Resolve and check the arguments of :func:`generate`; build what a strategy gets, without running the model.

    ``generate`` and ``decoding.pipeline`` both go through here, so the pipeline one shows is the
    one the other runs.

    Args:
        model, input_ids, attention_mask: as :func:`generate`.
        generation_config: a ``transformers.GenerationConfig`` (or dict); keyword arguments override it.
        logits_processor / stopping_criteria: extra processors / criteria, merged as the reference merges them.
        streamer: ``put(ids)`` / ``end()`` (see :mod:`decoding.streaming`); with ``num_beams > 1`` also
            a beam streamer (``on_step``; see :mod:`decoding.strategies.beam.streaming`).
        tokenizer: the model's tokenizer; needed for ``stop_strings``.
        prefix_allowed_tokens_fn, negative_prompt_ids, negative_prompt_attention_mask, assistant_model:
            as the reference's arguments of those names.
        synced_gpus: every ``torch.distributed`` rank keeps stepping (feeding its last tokens, its result
            unchanged) until all ranks are done, as the reference does for sharded models; None means False.
        inputs_embeds: the prompt as embeddings ``[batch, len, hidden]``, with or without ``input_ids``, fed
            by the prefill as the reference feeds it (:func:`decoding.inputs.prepare_embeds`).
        seed: per-row random streams (an int, or one per row); see :mod:`decoding.seeding`.
        order: the processor order: ``"hf"`` (default), ``"vllm"``, ``"llama.cpp"``, ``"mlx"`` or a list of names.
        output_beam_tree: with ``num_beams > 1`` and ``return_dict_in_generate``, record the search
            tree in ``out.trace["beam_tree"]`` (see :mod:`decoding.strategies.beam.tree`).
        **kwargs: generation-config fields (docs/api.md), and inputs of ``model.forward`` (``token_type_ids``,
            ``position_ids``, ``logits_to_keep``, ...), passed as the reference passes them (:mod:`decoding.model_kwargs`).
    """
    input_ids = take_inputs(input_ids, kwargs)
    past_key_values = take_cache(past_key_values, kwargs)
    model_kwargs = ModelKwargs(split_model_kwargs(model, kwargs, known=set(KNOBS) | set(REFUSED)))
    given = {name for name, value in kwargs.items() if value is not None}
    settings = resolve_settings(model, generation_config, kwargs)
    check_not_yet_implemented(settings, {
        "prefix_allowed_tokens_fn": prefix_allowed_tokens_fn, "assistant_model": assistant_model,
        "negative_prompt_ids": negative_prompt_ids,
        "negative_prompt_attention_mask": negative_prompt_attention_mask, "seed": seed, "order": order})
    check_settings(settings)
    check_cache_request(settings.cache_implementation, settings.cache_config, past_key_values,
                        bool(settings.use_cache), model_device(model))
    check_compile_request(settings.compile, settings.cache_implementation, past_key_values, bool(settings.use_cache))
    check_call_objects(logits_processor, stopping_criteria, streamer)
    check_order(order)
    check_beam_arguments(settings, streamer, output_beam_tree, seed)

    check_devices(input_ids, attention_mask)
    given |= _config_names(generation_config)
    check_special_tokens(settings, input_vocab_size(model), given)
    device = input_ids.device if isinstance(input_ids, torch.Tensor) else (
        inputs_embeds.device if isinstance(inputs_embeds, torch.Tensor) else torch.device("cpu"))
    eos, pad = special_tokens(settings, device)
    if inputs_embeds is not None:
        settings, input_ids, attention_mask = prepare_embeds(model, settings, inputs_embeds, input_ids, attention_mask,
                                                             pad, eos)
        model_kwargs.inputs_embeds = inputs_embeds
    if input_ids is None:
        if settings.bos_token_id is None:
            raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided; pass input_ids.")
        input_ids = torch.tensor([[int(settings.bos_token_id)]], dtype=torch.long)
    if inputs_embeds is None or input_ids.shape[1] > 0:
        check_input_ids(input_ids, input_vocab_size(model), settings.bos_token_id)
    input_ids = input_ids.long()
    model_kwargs.check(input_ids)
    if attention_mask is None:
        attention_mask = infer_attention_mask(input_ids, pad, eos)
    elif inputs_embeds is None:
        check_attention_mask(attention_mask, input_ids, past_length(past_key_values))
        attention_mask = attention_mask.long()   # a float or bool 0/1 mask: positions are counted from it
    prompt_length = input_ids.shape[1]
    max_length = resolve_max_length(settings, prompt_length, model, attention_mask,
                                    embeds_length=None if inputs_embeds is None else inputs_embeds.shape[1])

    rows_per_prompt = max(settings.num_beams, settings.num_return_sequences)
    check_continuation(past_key_values, prompt_length, attention_mask.shape[1], input_ids.shape[0] * rows_per_prompt,
                       max_length)
    seeds = row_seeds(seed, input_ids.shape[0] * rows_per_prompt)
    vocab_size = _vocab_width(model)
    check_processor_inputs(settings, vocab_size, input_ids.shape[0], rows_per_prompt, prefix_allowed_tokens_fn,
                           negative_prompt_ids, negative_prompt_attention_mask)
    prompt_ids = input_ids
    input_ids = expand_rows(input_ids, rows_per_prompt)
    attention_mask = expand_rows(attention_mask, rows_per_prompt)
    model_kwargs = model_kwargs.expand(rows_per_prompt)

    context = PipelineContext(vocab_size=vocab_size, prompt_length=prompt_length,
                              eos_token_ids=eos, num_beams=settings.num_beams, device=device,
                              max_length=max_length, prompt_ids=prompt_ids,
                              attention_mask=attention_mask[:, attention_mask.shape[1] - prompt_length:],
                              model=model, use_cache=bool(settings.use_cache),
                              prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                              negative_prompt_ids=negative_prompt_ids,
                              negative_prompt_attention_mask=negative_prompt_attention_mask,
                              seeds=seeds, tokenizer=tokenizer)
    processors = reorder(build_pipeline(settings, context, logits_processor or []), order)
    criteria = build_stopping(max_length, eos, settings.max_time, stopping_criteria or [],
                              stop_strings=settings.stop_strings, tokenizer=tokenizer)
    cache, compiled = _cache_and_compiled_step(model, settings, past_key_values, max_length, input_ids.shape[0])
    return PreparedCall(model, settings, input_ids, attention_mask, processors, context, criteria, eos, pad, max_length,
                        seeds, streamer=streamer, assistant_model=assistant_model, tokenizer=tokenizer,
                        output_beam_tree=output_beam_tree, model_kwargs=model_kwargs, cache=cache,
                        synced_gpus=bool(synced_gpus), compiled=compiled)


def _cache_and_compiled_step(model: Any, settings: Any, past_key_values: Any, max_length: int,
                             rows: int) -> tuple[Any, Any]:
    """The call's cache (the caller's, one built from ``cache_implementation``, or None: the runner's
    default) and its compiled decode step (None: eager) for ``rows`` rows, as :mod:`decoding.compiled` decides."""
    implementation = normalized(settings.cache_implementation)
    if settings.compile and implementation is None and past_key_values is None:
        implementation = "static"                  # compile=True builds the static cache it runs on
    device = model_device(model)
    compiling = bool(settings.use_cache) and wants_compile(
        settings.compile, settings.disable_compile, settings.compile_config,
        implementation in STATIC if past_key_values is None else is_static(past_key_values), device)
    cache = past_key_values
    if cache is None and settings.use_cache and implementation is not None:
        max_cache_len = settings.max_cache_len
        if compiling:                               # one cache shape, so one graph, for prompts of any length
            max_cache_len = bucket_length(max(max_length - 1, max_cache_len or 0))
        cache = build_cache(model, implementation, max_length, settings.cache_config, max_cache_len)
    if not compiling:
        return cache, None
    return cache, compiled_step(model, compile_options(settings.compile_config, device, rows))


def pipeline(model: Any, input_ids: Optional[torch.LongTensor] = None, /, order: Any = "hf",
             **kwargs: Any) -> LogitsProcessorList:
    """The ordered processors ``generate(model, input_ids, order=order, **kwargs)`` would apply.

    Built by the same code as ``generate`` (checks included), without running the model. Print it,
    reorder it (it is a list), or pass it on as ``logits_processor=``.

    Args:
        model: the model ``generate`` would run.
        input_ids: ``[batch, prompt_len]`` int64 (some processors depend on the prompt's length).
        order: ``"hf"`` (default), ``"vllm"``, ``"llama.cpp"``, ``"mlx"`` or a list of names
            (see :mod:`decoding.processors.orders`).
        **kwargs: any other argument of :func:`generate` (``strategy``, ``custom_generate`` and ``trace``
            included: they do not change the pipeline).
    """
    kwargs.pop("strategy", None)
    kwargs.pop("trace", None)
    split_custom_keywords(kwargs.pop("custom_generate", None), kwargs)
    return prepare_call(model, input_ids, order=order, **kwargs).processors
