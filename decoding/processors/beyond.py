"""Where the processors beyond the reference go in the default ("hf") pipeline.

- ``beyond_processors``: the penalties and biases (``presence_penalty``, ``frequency_penalty``,
  ``dry_multiplier``, ``logit_bias``, ``allowed_token_ids``, in that order). They change which token
  greedy search picks, so, like the reference's own non-warper processors, they run with greedy and
  sampling alike; they go after the reference's processors and before the user's
  ``logits_processor=[...]``.
- ``beyond_warpers``: the samplers, only when sampling. ``dynatemp_range`` takes the place of
  ``temperature`` (first); ``top_n_sigma``, ``xtc_probability`` and ``mirostat_tau`` follow the
  reference's warpers, mirostat last because its ``accept`` needs the distribution it truncated.

Each is built only when its knob is set (``None`` means off). ``processors/orders.py`` reorders the
result for the other engines' presets.
"""

from __future__ import annotations

from .base import ProcessorFn
from .bias import AllowedTokenIdsLogitsProcessor, LogitBiasLogitsProcessor, check_allowed_token_ids, check_logit_bias
from .dry import DRYLogitsProcessor, breaker_token_ids, check_breakers, check_dry
from .dynatemp import DynamicTemperatureLogitsWarper, check_dynatemp
from .mirostat import MirostatV2LogitsWarper, check_mirostat
from .presence import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor, check_penalty
from .top_n_sigma import TopNSigmaLogitsWarper
from .warpers import TemperatureLogitsWarper
from .xtc import XTCLogitsWarper, check_xtc

# Defaults of the companion knobs when only the main one is set (llama.cpp's defaults).
DEFAULTS = {"xtc_threshold": 0.1, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
            "mirostat_eta": 0.1, "dynatemp_exponent": 1.0}


def _get(settings, name: str):
    value = getattr(settings, name)
    return DEFAULTS[name] if value is None else value


def beyond_processors(settings, context) -> list[ProcessorFn]:
    """Penalties and biases beyond the reference, in the order above (greedy and sampling)."""
    s, c = settings, context
    processors: list[ProcessorFn] = []
    if s.presence_penalty is not None and s.presence_penalty != 0:
        processors.append(PresencePenaltyLogitsProcessor(s.presence_penalty, c.prompt_length))
    if s.frequency_penalty is not None and s.frequency_penalty != 0:
        processors.append(FrequencyPenaltyLogitsProcessor(s.frequency_penalty, c.prompt_length))
    if s.dry_multiplier is not None and s.dry_multiplier != 0:
        processors.append(DRYLogitsProcessor(
            s.dry_multiplier, _get(s, "dry_base"), _get(s, "dry_allowed_length"),
            breaker_token_ids(s.dry_sequence_breakers, c.tokenizer), _get(s, "dry_penalty_last_n"),
            padding_lengths=c.padding_lengths))
    if s.logit_bias is not None:
        processors.append(LogitBiasLogitsProcessor(s.logit_bias, c.vocab_size, device=c.device))
    if s.allowed_token_ids is not None:
        processors.append(AllowedTokenIdsLogitsProcessor(s.allowed_token_ids, c.vocab_size, device=c.device))
    return processors


def beyond_warpers(settings, context, warpers: list[ProcessorFn]) -> list[ProcessorFn]:
    """The reference's ``warpers`` with the samplers beyond it placed as described above."""
    s = settings
    warpers = list(warpers)
    if s.dynatemp_range is not None and s.dynatemp_range != 0:
        dynamic = DynamicTemperatureLogitsWarper(s.temperature, s.dynatemp_range, _get(s, "dynatemp_exponent"))
        warpers = [dynamic] + [w for w in warpers if not isinstance(w, TemperatureLogitsWarper)]
    if s.top_n_sigma is not None:
        warpers.append(TopNSigmaLogitsWarper(s.top_n_sigma))
    if s.xtc_probability is not None and s.xtc_probability != 0:
        warpers.append(XTCLogitsWarper(s.xtc_probability, _get(s, "xtc_threshold"), context.min_tokens_to_keep,
                                       seeds=context.seeds, prompt_length=context.prompt_length))
    if s.mirostat_tau is not None:
        warpers.append(MirostatV2LogitsWarper(s.mirostat_tau, _get(s, "mirostat_eta")))
    return warpers


def check_beyond_settings(settings) -> None:
    """Range checks of every knob beyond the reference (run before the first forward pass).

    Raises:
        ValueError: naming the knob, its value and the valid range.
    """
    s = settings
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(s, name) is not None:
            check_penalty(name, getattr(s, name))
    if s.logit_bias is not None:
        check_logit_bias(s.logit_bias)
    if s.allowed_token_ids is not None:
        check_allowed_token_ids(s.allowed_token_ids)
    if s.top_n_sigma is not None:
        TopNSigmaLogitsWarper(s.top_n_sigma)
    if s.xtc_probability is not None or s.xtc_threshold is not None:
        check_xtc(0.0 if s.xtc_probability is None else s.xtc_probability, _get(s, "xtc_threshold"))
    if s.dry_multiplier is not None or any(getattr(s, n) is not None for n in
                                           ("dry_base", "dry_allowed_length", "dry_penalty_last_n")):
        multiplier = 1.0 if s.dry_multiplier in (None, 0) else s.dry_multiplier
        check_dry(multiplier, _get(s, "dry_base"), _get(s, "dry_allowed_length"), _get(s, "dry_penalty_last_n"))
    if s.dry_sequence_breakers is not None:
        check_breakers(s.dry_sequence_breakers)
    if s.mirostat_tau is not None or s.mirostat_eta is not None:
        check_mirostat(5.0 if s.mirostat_tau is None else s.mirostat_tau, _get(s, "mirostat_eta"))
    if s.dynatemp_range is not None or s.dynatemp_exponent is not None:
        check_dynatemp(0.0 if s.dynatemp_range is None else s.dynatemp_range, _get(s, "dynatemp_exponent"))
