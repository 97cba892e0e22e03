"""Resolve the settings of one `generate` call, the way the reference resolves them.

Priority, highest first (as `model.generate` in transformers 5.23):

1. keyword arguments of the call (even an explicit ``None`` overrides);
2. the ``generation_config=`` object passed to the call (its non-``None`` fields);
3. ``model.generation_config`` (its non-``None`` fields);
4. the reference's global defaults (``GLOBAL_DEFAULTS`` below).

The result is a :class:`Settings` object: a plain namespace with one attribute per knob, named as
``transformers`` names it. Validation of the values lives in :mod:`decoding.validation`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownArgumentError  # noqa: F401 (raised here, importable from here)

# The reference's defaults for fields left unset by the user and by the model's generation config.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "use_cache": True,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
}

# Every generation-config field `decoding` reads. Fields not in GLOBAL_DEFAULTS default to None.
CONFIG_FIELDS: tuple[str, ...] = (
    # length
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "max_time", "stop_strings",
    "early_stopping",
    # strategy
    "do_sample", "num_beams", "use_cache", "num_return_sequences",
    # processors (the reference's names)
    "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h",
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "sequence_bias", "suppress_tokens",
    "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
    "exponential_decay_length_penalty", "remove_invalid_values", "renormalize_logits",
    "guidance_scale", "watermarking_config", "length_penalty",
    # processors beyond the reference (docs/processors.md#beyond-the-reference); None means off
    "presence_penalty", "frequency_penalty", "logit_bias", "allowed_token_ids", "top_n_sigma",
    "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base", "dry_allowed_length",
    "dry_sequence_breakers", "dry_penalty_last_n", "mirostat_tau", "mirostat_eta", "dynatemp_range",
    "dynatemp_exponent",
    # special tokens
    "bos_token_id", "eos_token_id", "pad_token_id",
    # outputs
    "return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
    "output_hidden_states",
    # speculative decoding
    "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit",
)

# Arguments of `generate` that are not generation-config fields.
CALL_ARGUMENTS: tuple[str, ...] = (
    "logits_processor", "stopping_criteria", "streamer", "prefix_allowed_tokens_fn",
    "assistant_model", "negative_prompt_ids", "negative_prompt_attention_mask", "tokenizer",
    "assistant_tokenizer", "generation_config", "attention_mask", "past_key_values",
    # beyond the reference
    "seed", "order", "output_beam_tree",
)

# Knobs of the reference that this version of `decoding` does not implement yet. Setting one to a
# value other than its default raises NotImplementedError naming it (never a silent difference).
NOT_YET_IMPLEMENTED: dict[str, Any] = {
    "past_key_values": None,
}



@dataclass
class Settings:
    """The resolved knobs of one call, one attribute per generation-config field.

    ``values`` holds every field in :data:`CONFIG_FIELDS`; attribute access reads it.
    ``has_default_max_length`` is True when no ``max_length`` was set anywhere (the reference then
    generates 20 new tokens, capped at ``max_position_embeddings``).
    """

    values: dict[str, Any]
    has_default_max_length: bool = False
    has_default_min_length: bool = True
    explicit: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        values.update(changes)
        return Settings(values, self.has_default_max_length, self.has_default_min_length,
                        set(self.explicit) | set(changes))


def _config_values(config: Any) -> dict[str, Any]:
    """The fields of a GenerationConfig-like object (or a dict) that `decoding` reads."""
    if config is None:
        return {}
    raw = config if isinstance(config, dict) else config.to_dict()
    return {name: raw[name] for name in CONFIG_FIELDS if name in raw}


def resolve_settings(model: Any, generation_config: Any, kwargs: dict[str, Any]) -> Settings:
    """Merge keyword arguments, a user config, the model's config and the global defaults.

    Raises:
        UnknownArgumentError: a keyword is neither a config field nor an argument of `generate`.
        TypeError: ``generation_config`` is not a ``GenerationConfig`` (or a dict).
    """
    unknown = [name for name in kwargs if name not in CONFIG_FIELDS]
    if unknown:
        known = CONFIG_FIELDS + CALL_ARGUMENTS
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UnknownArgumentError(
            f"generate() got unknown keyword argument(s): {', '.join(hints)}. Use the keyword names of "
            "transformers' model.generate; see docs/api.md for the full list.")
    if generation_config is not None and not (isinstance(generation_config, dict)
                                              or hasattr(generation_config, "to_dict")):
        raise TypeError(
            f"generation_config must be a transformers.GenerationConfig (or a dict), got "
            f"{type(generation_config).__name__}.")

    user = {k: v for k, v in _config_values(generation_config).items() if v is not None}
    model_config = getattr(model, "generation_config", None)
    from_model = {k: v for k, v in _config_values(model_config).items() if v is not None}

    values: dict[str, Any] = {name: None for name in CONFIG_FIELDS}
    values.update(user)
    for name, value in from_model.items():
        if values[name] is None:
            values[name] = value
    for name, value in GLOBAL_DEFAULTS.items():
        if values[name] is None:
            values[name] = value
    values.update(kwargs)

    has_default_max_length = (kwargs.get("max_length") is None and "max_length" not in user
                              and "max_length" not in from_model)
    has_default_min_length = (kwargs.get("min_length") is None and "min_length" not in user
                              and "min_length" not in from_model)
    return Settings(values, has_default_max_length, has_default_min_length, set(kwargs) | set(user))
