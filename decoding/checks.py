"""Value checks, written once: the primitives and the one-line range rules that knobs declare.

Every range error of a knob reads ``"`name` <rule>, but is <value>."``: the :class:`Check` below
writes that sentence, so a declaration gives only the rule's words and its test. The primitives
(``is_int``: "an integer, not a bool", ...) are the only copies in the modules that validate knobs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), but not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (NaN and infinities included), but not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number that is not NaN (infinities allowed), not a ``bool``."""
    return is_number(value) and not math.isnan(value)


def is_finite(value: Any) -> bool:
    """A finite real number, not a ``bool``."""
    return is_number(value) and math.isfinite(value)


def is_token_id(value: Any) -> bool:
    """A token id: an integer >= 0, not a ``bool``."""
    return is_int(value) and value >= 0


@dataclass(frozen=True)
class Check:
    """A one-line rule: ``test(value)`` must hold, else ``ValueError("`name` {says}, but is {value!r}{after}.")``.

    Attributes:
        test: True for a valid value.
        says: the rule in words, as the message gives it (``"must be an integer >= 1"``).
        values: the valid values in a few characters, for the docs table (``"int >= 1"``).
        after: text after the value in the message (``"; use True, False or 'never'"``).
    """

    test: Callable[[Any], bool]
    says: str
    values: str
    after: str = ""

    def __call__(self, name: str, value: Any) -> None:
        if not self.test(value):
            raise ValueError(f"`{name}` {self.says}, but is {value!r}{self.after}.")


def integer(says: str, low: int, values: Optional[str] = None) -> Check:
    """An integer (not a bool) ``>= low``."""
    return Check(lambda v: is_int(v) and v >= low, says, values or f"int >= {low}")


def interval(says: str, low: float, high: float, low_open: bool = False, high_open: bool = False,
             values: Optional[str] = None) -> Check:
    """A number (not NaN, not a bool) in the interval from ``low`` to ``high``."""
    def test(v: Any) -> bool:
        return is_real(v) and (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Check(test, says, values or text)


def positive(says: str, finite: bool = True, strict: bool = True, values: Optional[str] = None) -> Check:
    """A number (not NaN, not a bool) ``> 0`` (``>= 0`` when not ``strict``), finite unless told otherwise."""
    def test(v: Any) -> bool:
        return (is_finite(v) if finite else is_real(v)) and (v > 0 if strict else v >= 0)

    return Check(test, says, values or (">" if strict else ">=") + " 0" + (", finite" if finite else ""))

