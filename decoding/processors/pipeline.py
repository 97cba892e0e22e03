"""Build the ordered processor pipeline for one call, in the reference's order.

The order (``GenerationMixin._get_logits_processor`` in transformers 5.23), each
built only when its knob asks for it:

1. guidance, sequence bias, diversity penalty (group beam search, as transformers 4.55), encoder repetition penalty, repetition penalty, no-repeat n-gram,
   encoder no-repeat n-gram, bad words, min length, min new tokens, prefix constraint, forced
   bos, forced eos, inf/nan removal, exponential decay length penalty, suppress tokens, suppress
   tokens at begin; then the penalties and biases beyond the reference (``processors/beyond.py``); then
2. the user's ``logits_processor=[...]``: a user processor whose class name equals a built-in
   one replaces it in place, the others are appended here; then
3. the warpers, only when sampling: temperature, top-h, top-k, top-p, min-p, typical, epsilon, eta
   (then the samplers beyond the reference; ``dynatemp_range`` replaces temperature);
4. watermarking, then ``renormalize_logits`` last.

The result is a :class:`LogitsProcessorList`: inspect it, reorder it, or pass your own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from ..merge import merge_by_class
from ..versions import PREFIX_ROWS_COUNT_RETURN_SEQUENCES, REPETITION_PENALTY_SKIPS_PADDING
from .bans import (EncoderNoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor, NoRepeatNGramLogitsProcessor,
                   PrefixConstrainedLogitsProcessor, SequenceBiasLogitsProcessor,
                   SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor)
from .base import LogitsProcessorList, ProcessorFn
from .diversity import HammingDiversityLogitsProcessor
from .beyond import beyond_processors, beyond_warpers
from .guidance import UnbatchedClassifierFreeGuidanceLogitsProcessor
from .lengths import (ExponentialDecayLengthPenalty, ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor,
                      MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor)
from .normalize import InfNanRemoveLogitsProcessor, LogitNormalization
from .penalties import EncoderRepetitionPenaltyLogitsProcessor, RepetitionPenaltyLogitsProcessor
from .warpers import (EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TemperatureLogitsWarper,
                      TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)
from .watermark import watermark_processor


@dataclass
class PipelineContext:
    """What processors need to know about the call beyond the knobs.

    Attributes:
        vocab_size: width of the scores, ``[rows, vocab]``.
        prompt_length: padded prompt length (the reference's ``input_ids_length``).
        eos_token_ids: ``[n_eos]`` int64 or None.
        num_beams: 1 for greedy/sampling.
        device: where the bookkeeping (and so the processors) runs: the device of ``input_ids``.
        max_length: the absolute length (prompt included) at which generation stops; needed by
            ``forced_eos_token_id``.
        prompt_ids: ``[batch, prompt_len]`` int64, the prompt before row expansion; needed by
            ``encoder_repetition_penalty`` and ``encoder_no_repeat_ngram_size``.
        attention_mask: ``[rows, prompt_len]`` 0/1 mask of the expanded prompt; gives
            ``repetition_penalty`` each row's left-padding length (ignored when all ones).
        model: the model; needed by ``guidance_scale`` (its own forward) and ``watermarking_config``
            (the config's vocabulary size).
        use_cache: whether guidance's forward keeps a cache.
        prefix_allowed_tokens_fn, negative_prompt_ids, negative_prompt_attention_mask: the
            ``generate`` arguments of those names.
    """

    vocab_size: int
    prompt_length: int
    eos_token_ids: Optional[torch.Tensor]
    num_beams: int = 1
    device: torch.device = torch.device("cpu")
    max_length: Optional[int] = None
    prompt_ids: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None
    model: Any = None
    use_cache: bool = True
    prefix_allowed_tokens_fn: Optional[Callable] = None
    negative_prompt_ids: Optional[torch.Tensor] = None
    negative_prompt_attention_mask: Optional[torch.Tensor] = None
    # beyond the reference: per-row seeds (``generate(seed=...)``, for XTC's coins) and the tokenizer
    # (for ``dry_sequence_breakers`` given as strings)
    seeds: Optional[list] = None
    tokenizer: Any = None

    @property
    def min_tokens_to_keep(self) -> int:
        """1 without beams; with beam sampling ``n_eos + 1`` (2 without eos), as the reference."""
        if self.num_beams <= 1:
            return 1
        return (len(self.eos_token_ids) if self.eos_token_ids is not None else 1) + 1

    @property
    def padding_lengths(self) -> Optional[torch.Tensor]:
        """``[rows]`` int64 left-padding length of each row, or None when the mask is all ones."""
        mask = self.attention_mask
        if mask is None or bool((mask == 1).all()):
            return None
        return (mask != 0).int().argmax(dim=1)

    @property
    def watermark_vocab_size(self) -> int:
        """The vocabulary size the reference gives the watermark: the model config's, else the scores'."""
        config = getattr(self.model, "config", None)
        size = getattr(config.get_text_config(), "vocab_size", None) if config is not None else None
        return int(size) if size is not None else self.vocab_size


def _processors(settings, context: PipelineContext) -> list[ProcessorFn]:
    """The non-warper processors, in the reference's order (#1 to #16)."""
    s, c = settings, context
    eos = c.eos_token_ids
    processors: list[ProcessorFn] = []
    if s.guidance_scale is not None and s.guidance_scale != 1:
        if c.model is None:
            raise ValueError("`guidance_scale` needs the model in PipelineContext(model=...): it runs its own forward.")
        processors.append(UnbatchedClassifierFreeGuidanceLogitsProcessor(
            s.guidance_scale, c.model, unconditional_ids=c.negative_prompt_ids,
            unconditional_attention_mask=c.negative_prompt_attention_mask, use_cache=bool(s.use_cache)))
    if s.sequence_bias is not None:
        processors.append(SequenceBiasLogitsProcessor(s.sequence_bias))
    # diverse beam search (transformers 4.55 builds its penalty here; later releases dropped the method)
    if (s.num_beam_groups or 1) > 1 and s.diversity_penalty:
        processors.append(HammingDiversityLogitsProcessor(s.diversity_penalty, s.num_beams, s.num_beam_groups))
    if s.encoder_repetition_penalty is not None and s.encoder_repetition_penalty != 1.0 and c.prompt_ids is not None:
        processors.append(EncoderRepetitionPenaltyLogitsProcessor(s.encoder_repetition_penalty, c.prompt_ids))
    if s.repetition_penalty is not None and s.repetition_penalty != 1.0:
        padding = c.padding_lengths if REPETITION_PENALTY_SKIPS_PADDING else None
        processors.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty, prompt_ignore_length=padding))
    if s.no_repeat_ngram_size is not None and s.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(s.no_repeat_ngram_size))
    if s.encoder_no_repeat_ngram_size is not None and s.encoder_no_repeat_ngram_size > 0 and c.prompt_ids is not None:
        processors.append(EncoderNoRepeatNGramLogitsProcessor(s.encoder_no_repeat_ngram_size, c.prompt_ids))
    if s.bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(s.bad_words_ids, eos))
    # reference quirk: min_new_tokens (even 0) rewrites min_length as min_new_tokens + prompt length.
    min_length = s.min_length if s.min_new_tokens is None else s.min_new_tokens + c.prompt_length
    if min_length is not None and eos is not None and min_length > 0:
        processors.append(MinLengthLogitsProcessor(min_length, eos, device=c.device))
    if s.min_new_tokens is not None and eos is not None and s.min_new_tokens > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(c.prompt_length, s.min_new_tokens, eos, device=c.device))
    if c.prefix_allowed_tokens_fn is not None:
        # 5.24 tells the function max(num_beams, num_return_sequences) rows per prompt (versions.py).
        rows = max(s.num_beams, s.num_return_sequences or 1) if PREFIX_ROWS_COUNT_RETURN_SEQUENCES else s.num_beams
        processors.append(PrefixConstrainedLogitsProcessor(c.prefix_allowed_tokens_fn, rows))
    if s.forced_bos_token_id is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(s.forced_bos_token_id))
    if s.forced_eos_token_id is not None:
        if c.max_length is None:
            raise ValueError("`forced_eos_token_id` needs PipelineContext(max_length=...).")
        processors.append(ForcedEOSTokenLogitsProcessor(c.max_length, s.forced_eos_token_id, device=c.device))
    if s.remove_invalid_values is True:
        processors.append(InfNanRemoveLogitsProcessor())
    if s.exponential_decay_length_penalty is not None:
        processors.append(ExponentialDecayLengthPenalty(s.exponential_decay_length_penalty, eos, c.prompt_length))
    if s.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(s.suppress_tokens, device=c.device))
    if s.begin_suppress_tokens is not None:
        begin_index = c.prompt_length
        # reference quirk: a one-token prompt with forced_bos_token_id moves the suppression one step later.
        if c.prompt_length == 1 and s.forced_bos_token_id is not None:
            begin_index += 1
        processors.append(SuppressTokensAtBeginLogitsProcessor(s.begin_suppress_tokens, begin_index, device=c.device))
    return processors


def _warpers(settings, context: PipelineContext) -> list[ProcessorFn]:
    """The sampling warpers, in the reference's order (only built when ``do_sample``)."""
    s, keep = settings, context.min_tokens_to_keep
    warpers: list[ProcessorFn] = []
    if s.temperature is not None and s.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(s.temperature))
    if s.top_h is not None:
        warpers.append(TopHLogitsWarper(top_h=s.top_h))
    if s.top_k is not None and s.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=s.top_k, min_tokens_to_keep=keep))
    if s.top_p is not None and s.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=s.top_p, min_tokens_to_keep=keep))
    if s.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=s.min_p, min_tokens_to_keep=keep))
    if s.typical_p is not None and s.typical_p < 1.0:
        warpers.append(TypicalLogitsWarper(mass=s.typical_p, min_tokens_to_keep=keep))
    if s.epsilon_cutoff is not None and 0.0 < s.epsilon_cutoff < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon=s.epsilon_cutoff, min_tokens_to_keep=keep))
    if s.eta_cutoff is not None and 0.0 < s.eta_cutoff < 1.0:
        warpers.append(EtaLogitsWarper(epsilon=s.eta_cutoff, min_tokens_to_keep=keep, device=context.device))
    return warpers


def _finishers(settings, context: PipelineContext) -> list[ProcessorFn]:
    """Watermarking (greedy too), then log-softmax normalisation: always the last two."""
    finishers: list[ProcessorFn] = []
    if settings.watermarking_config is not None:
        finishers.append(watermark_processor(settings.watermarking_config, context.watermark_vocab_size,
                                             context.device))
    if settings.renormalize_logits is True:
        finishers.append(LogitNormalization())
    return finishers


def build_pipeline(settings, context: PipelineContext,
                   user_processors: Iterable[ProcessorFn] = ()) -> LogitsProcessorList:
    """The processors a call with these settings applies, in order."""
    pipeline = merge_by_class(_processors(settings, context) + beyond_processors(settings, context), user_processors)
    if settings.do_sample:
        pipeline.extend(beyond_warpers(settings, context, _warpers(settings, context)))
    pipeline.extend(_finishers(settings, context))
    return LogitsProcessorList(pipeline)
