"""The declaration of a generation keyword (:class:`Knob`) and of a sampler beyond the reference (:class:`Sampler`).

The table of every keyword is :data:`decoding.knobs.KNOBS`; the registered samplers are
:data:`decoding.processors.beyond.SAMPLERS`. Settings resolution, validation, the command-line
flags, the order presets and the docs table are all derived from these declarations.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

# The groups of the table, in the order the docs and the CLI help show them.
LENGTH, STRATEGY, PROCESSORS, BEYOND = "length", "strategy", "processors", "beyond the reference"
SPECIAL_TOKENS, OUTPUTS, SPECULATIVE, CALL = "special tokens", "outputs", "speculative", "call arguments"
GROUPS = (LENGTH, STRATEGY, PROCESSORS, BEYOND, SPECIAL_TOKENS, OUTPUTS, SPECULATIVE, CALL)

# A sampler's stage: a PENALTY (or bias) changes which token greedy search picks, so it runs with
# greedy and sampling alike, after the reference's processors; a WARPER runs only when sampling.
PENALTY, WARPER = "penalty", "warper"
# Places in an engine preset besides "after NAME" / "before NAME": the front, or after the
# engine's own samplers (for a sampler the engine does not have). None: not named in that preset.
FIRST, LAST = "first", "last"


def literal(text: str) -> Any:
    """The command line's parser for values that are not one number or word: a Python literal.

    ``"2"`` -> 2, ``"[2, 7]"`` -> [2, 7], ``"{(5,): -1.0}"`` -> a dict, ``"true"`` -> True; any other
    text is returned as it is (so ``never`` stays the string ``"never"``).
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


@dataclass(frozen=True)
class Knob:
    """One keyword of ``generate``: every fact about it, in one place.

    Attributes:
        name: the keyword, as ``transformers`` names it (or as the engine that has it, beyond the reference).
        group: one of :data:`GROUPS`.
        help: what it does, in one line (the CLI help and the docs table).
        default: the reference's default when set nowhere (``None``: unset, or off).
        type: how the command line parses its value: ``int``, ``float``, ``str``, ``bool`` (a switch
            with a ``--no-`` form) or :func:`literal`.
        check: ``check(name, value)`` raises ``ValueError`` for a value out of range (a
            :class:`~decoding.checks.Check` or any function); run on every value but ``None``.
        values: the valid values in a few words, for the docs (default: the check's own).
        companion: beyond the reference, the value used while the knob is unset but its sampler is
            on (``xtc_threshold`` 0.1 once ``xtc_probability`` is set): llama.cpp's defaults.
        flag: whether the command line has a flag for it.
        multi: whether that flag takes several values (``--stop-strings "." "!"``).
        nullable: whether ``None`` is a valid value (it skips the check); False runs the check on it.
        metavar: the value's placeholder in the CLI help (default: from ``type``).
    """

    name: str
    group: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = literal
    check: Optional[Callable[[str, Any], None]] = None
    values: str = ""
    companion: Any = None
    flag: bool = True
    multi: bool = False
    nullable: bool = True
    metavar: Optional[str] = None

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"Knob {self.name!r}: group must be one of {GROUPS}, got {self.group!r}.")

    def validate(self, value: Any) -> None:
        """Raise the knob's ``ValueError`` if ``value`` is out of range (``None`` passes when nullable).

        A tensor is refused here for every knob but the special-token ids and the call arguments
        (its comparisons would give tensors, not answers): pass ``value.item()`` or ``value.tolist()``.
        """
        if isinstance(value, torch.Tensor) and self.group not in (CALL, SPECIAL_TOKENS):
            kind = self.type.__name__ if self.type in (int, float, bool) else "value"
            raise ValueError(f"`{self.name}` must be a plain Python {kind}, not a tensor ({value!r}); pass "
                             "value.item() or value.tolist().")
        if self.check is not None and (value is not None or not self.nullable):
            self.check(self.name, value)

    def read(self, settings: Any) -> Any:
        """The knob's value in ``settings``, or its companion default when unset."""
        value = getattr(settings, self.name)
        return self.companion if value is None else value

    @property
    def valid_values(self) -> str:
        return self.values or getattr(self.check, "values", "")


@dataclass(frozen=True)
class Sampler:
    """A processor beyond the reference, registered in :data:`decoding.processors.beyond.SAMPLERS`.

    Attributes:
        processor: its class; ``processor.name`` is the keyword that turns it on (``knobs[0]``).
        knobs: the keywords it reads, the main one first.
        build: ``build(settings, context) -> processor or None`` (None when its knobs leave it off);
            ``context`` is the call's :class:`~decoding.processors.pipeline.PipelineContext`.
        stage: :data:`PENALTY` (greedy too) or :data:`WARPER` (sampling only). In the default
            ("hf") order penalties follow the reference's processors and warpers follow its
            warpers, each in registration order.
        places: its place in each engine preset other than "hf": ``"after NAME"``, ``"before
            NAME"``, :data:`FIRST`, :data:`LAST` (after that engine's own samplers), or None / left
            out (not named: it stays next to the processor built before it).
        replaces: the name of a reference warper it takes the place of (``dynamic temperature``
            replaces ``temperature``): that warper is dropped and this one goes first among the warpers.
    """

    processor: type
    knobs: tuple
    build: Callable[[Any, Any], Any]
    stage: str
    places: Mapping[str, Optional[str]] = field(default_factory=dict)
    replaces: Optional[str] = None

    def __post_init__(self):
        name = getattr(self.processor, "name", None)
        if not self.knobs or self.knobs[0].name != name:
            raise ValueError(f"Sampler {self.processor.__name__}: its first knob must be its keyword "
                             f"{name!r} (the processor's `name`).")
        if self.stage not in (PENALTY, WARPER):
            raise ValueError(f"Sampler {name!r}: stage must be {PENALTY!r} or {WARPER!r}, got {self.stage!r}.")
        for preset, place in self.places.items():
            words = place.split() if isinstance(place, str) else []
            if not (place is None or place in (FIRST, LAST) or (len(words) == 2 and words[0] in ("after", "before"))):
                raise ValueError(f"Sampler {name!r}: place {place!r} in preset {preset!r} must be 'after NAME', "
                                 f"'before NAME', {FIRST!r}, {LAST!r} or None.")

    @property
    def name(self) -> str:
        return self.processor.name
