"""How the reference merges user-supplied processors or criteria with the ones it builds."""

from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def merge_by_class(built: Iterable[T], user: Iterable[T]) -> list[T]:
    """A user item whose class name equals a built-in one's replaces it in place; the rest are appended.

    Class names (not class identity) are compared, so the reference's classes and ours, which share
    names, replace each other the way ``model.generate`` replaces its own.
    """
    user = list(user or [])
    merged: list[T] = []
    for default in built:
        replacement = next((u for u in user if type(u).__name__ == type(default).__name__), None)
        merged.append(replacement if replacement is not None else default)
    merged.extend(u for u in user if not any(u is m for m in merged))
    return merged
