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

from .declarations import CALL
from .errors import UnknownArgumentError  # noqa: F401 (raised here, importable from here)
from .knobs import KNOBS, REFUSED

# Every generation-config field `decoding` reads (decoding/knobs.py). Fields not in GLOBAL_DEFAULTS default to None.
CONFIG_FIELDS: tuple[str, ...] = tuple(name for name, knob in KNOBS.items() if knob.group != CALL)

# The reference's defaults for fields left unset by the user and by the model's generation config.
GLOBAL_DEFAULTS: dict[str, Any] = {name: KNOBS[name].default for name in CONFIG_FIELDS
                                   if KNOBS[name].default is not None}

# Arguments of `generate` that are not generation-config fields.
CALL_ARGUMENTS: tuple[str, ...] = tuple(name for name, knob in KNOBS.items() if knob.group == CALL)

# Keywords of the reference that this version of `decoding` does not implement, with the reference's
# default. A value that turns one on raises NotImplementedError naming it (never a silent difference).
NOT_YET_IMPLEMENTED: dict[str, Any] = {name: refused.default for name, refused in REFUSED.items()}


@dataclass
class Settings:
    """The resolved knobs of one call, one attribute per generation-config field.

    ``values`` holds every field in :data:`CONFIG_FIELDS`; attribute access reads it.
    ``has_default_max_length`` is True when no ``max_length`` was set anywhere (the reference then
    generates 20 new tokens, capped at ``max_position_embeddings``). ``refused`` maps each keyword of
    :data:`REFUSED` that is on to ``(value, where it was set)``; ``validation`` raises for them.
    """

    values: dict[str, Any]
    has_default_max_length: bool = False
    has_default_min_length: bool = True
    explicit: set[str] = field(default_factory=set)
    refused: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        values.update(changes)
        return Settings(values, self.has_default_max_length, self.has_default_min_length,
                        set(self.explicit) | set(changes), dict(self.refused))


def _config_values(config: Any, names=CONFIG_FIELDS) -> dict[str, Any]:
    """The fields ``names`` of a GenerationConfig-like object (or a dict) that it holds."""
    if config is None:
        return {}
    raw = config if isinstance(config, dict) else config.to_dict()
    return {name: raw[name] for name in names if name in raw}


def _refused(kwargs: dict[str, Any], generation_config: Any, model_config: Any) -> dict[str, tuple[Any, str]]:
    """The keywords of :data:`REFUSED` that are on, with where their value comes from.

    The value is resolved with the same priority as the others (keyword, then ``generation_config=``,
    then ``model.generation_config``). One set only in the model's generation config is refused
    only when it changes the tokens or the strategy (``REFUSED[name].changes_tokens``): a checkpoint
    carrying ``cache_implementation="static"`` still generates the same tokens here.
    """
    sources = (("keyword", {k: v for k, v in kwargs.items() if k in REFUSED}),
               ("generation_config", _config_values(generation_config, tuple(REFUSED))),
               ("model.generation_config", _config_values(model_config, tuple(REFUSED))))
    found: dict[str, tuple[Any, str]] = {}
    for name, refused in REFUSED.items():
        for source, values in sources:
            if name in values and (values[name] is not None or source == "keyword"):
                if not refused.is_off(values[name]) and (source != "model.generation_config"
                                                         or refused.changes_tokens):
                    found[name] = (values[name], source)
                break
    return found


def resolve_settings(model: Any, generation_config: Any, kwargs: dict[str, Any]) -> Settings:
    """Merge keyword arguments, a user config, the model's config and the global defaults.

    Raises:
        UnknownArgumentError: a keyword is neither a config field nor an argument of `generate`.
        TypeError: ``generation_config`` is not a ``GenerationConfig`` (or a dict).
    """
    unknown = [name for name in kwargs if name not in CONFIG_FIELDS and name not in REFUSED]
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
    refused = _refused(kwargs, generation_config, model_config)
    kwargs = {k: v for k, v in kwargs.items() if k not in REFUSED}
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
    return Settings(values, has_default_max_length, has_default_min_length, set(kwargs) | set(user), refused)
