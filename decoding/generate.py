"""``decoding.generate``: the drop-in replacement for ``model.generate``.

It reads the arguments the way the reference reads them, checks them all before the first forward
pass, builds the pieces of the data flow and hands them to one strategy loop:

    settings -> inputs -> processors + stopping -> runner -> strategy -> result
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

from .config import Settings, resolve_settings
from .inputs import expand_rows, infer_attention_mask, resolve_max_length, special_tokens
from .processors import LogitsProcessorList, PipelineContext, build_pipeline
from .runner import ModelRunner
from .speculation import build_drafter, check_speculation, is_speculative
from .stopping import StoppingCriteriaList, build_stopping
from .strategies import SequenceState, greedy_search, sample
from .strategies.speculative import speculative_decoding
from .validation import (check_attention_mask, check_input_ids, check_not_yet_implemented,
                         check_settings, input_vocab_size)


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
        streamer: an object with ``put(ids)`` and ``end()`` (see :mod:`decoding.streaming`).
        tokenizer: the model's tokenizer; needed for ``stop_strings``.
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
    settings = resolve_settings(model, generation_config, kwargs)
    check_not_yet_implemented(settings, {
        "prefix_allowed_tokens_fn": prefix_allowed_tokens_fn, "assistant_model": assistant_model,
        "negative_prompt_ids": negative_prompt_ids, "past_key_values": past_key_values,
        "negative_prompt_attention_mask": negative_prompt_attention_mask, "seed": seed, "order": order})
    check_settings(settings)

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
    input_ids = expand_rows(input_ids, rows_per_prompt)
    attention_mask = expand_rows(attention_mask, rows_per_prompt)

    context = PipelineContext(vocab_size=_vocab_width(model), prompt_length=prompt_length,
                              eos_token_ids=eos, num_beams=settings.num_beams, device=device)
    speculative = is_speculative(settings, assistant_model)
    if speculative:
        check_speculation(settings, model, assistant_model, input_ids.shape[0], streamer, seed)
    processors = build_pipeline(settings, context, logits_processor or [])
    criteria = build_stopping(max_length, eos, settings.max_time, stopping_criteria or [],
                              stop_strings=settings.stop_strings, tokenizer=tokenizer)
    if speculative:
        drafter = build_drafter(settings, model, assistant_model, attention_mask, processors, context, eos,
                                max_length)
        return_dict = bool(settings.return_dict_in_generate)
        return speculative_decoding(model, input_ids, attention_mask, drafter, processors, criteria, max_length,
                                    bool(settings.do_sample), pad, eos, streamer,
                                    output_scores=return_dict and bool(settings.output_scores),
                                    output_logits=return_dict and bool(settings.output_logits),
                                    return_dict=return_dict)
    return run_strategy(model, input_ids, attention_mask, settings, processors, criteria, pad,
                        streamer, max_length)


def run_strategy(model: Any, input_ids: torch.LongTensor, attention_mask: torch.LongTensor,
                 settings: Settings, processors: LogitsProcessorList, criteria: StoppingCriteriaList,
                 pad: Optional[torch.Tensor], streamer: Any, max_length: int):
    """Run the loop the settings select on prepared (expanded) inputs and return the result."""
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
    strategy = sample if settings.do_sample else greedy_search
    try:
        strategy(runner, input_ids, processors, state)
    except (Exception, KeyboardInterrupt) as error:
        if state.length == state.prompt_length:
            raise
        raise GenerationInterrupted(
            f"generation stopped after {state.length - state.prompt_length} new tokens by "
            f"{type(error).__name__}: {error}; the tokens so far are in .partial", state.sequences.clone()) from error
    return state.finish(return_dict, cache=runner.cache)
