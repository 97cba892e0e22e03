"""Constraints for constrained beam search: phrases that must appear, and "one of these phrases".

``generate(..., num_beams=4, constraints=[PhrasalConstraint([5, 6]), DisjunctiveConstraint([[7], [8, 9]])])``
(or ``force_words_ids=[[5, 6], [[7], [8, 9]]]``) returns only sequences that contain the token
sequence ``5 6`` and one of ``7`` or ``8 9`` (docs/constrained-beam-search.md).

A constraint is a description (immutable). :class:`ConstraintProgress` reads a sequence token by token
and tracks, as the constrained beam search of transformers 4.55 does, which constraints are met, which
one is in progress (with the tokens matched so far) and which are pending:

- with no constraint in progress, a token that starts a pending constraint (the first pending one in
  order) puts it in progress (or completes it, for a one-token phrase);
- with one in progress, a token that continues it advances it (and completes it at its end); any
  other token abandons it: it becomes pending again, last in order, and that token starts nothing;
- the **bank** of a sequence is the number of constraint tokens it has met: ``longest * complete``
  plus the tokens matched by the one in progress (scaled so that every constraint weighs ``longest``,
  the length of the longest phrase); beams are allotted per bank (Post and Vilar 2018).

The whole row is read, prompt included, as in transformers 4.55: a phrase met in the prompt counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union


class ConstraintsNotMet(RuntimeError):
    """Constrained beam search ended with fewer than ``num_return_sequences`` hypotheses of some prompt that
    meet every constraint (transformers 4.55 returns hypotheses that miss some then; ``decoding`` refuses to)."""


def _token_list(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in value):
        raise ValueError(f"{what} must be a non-empty list of token ids (integers >= 0), but is {value!r}.")
    return tuple(value)


class PhrasalConstraint:
    """The token sequence ``token_ids`` must appear, contiguous and in order.

    Args:
        token_ids: a non-empty list of token ids (a word's tokens:
            ``tokenizer(word, add_special_tokens=False).input_ids``).
    """

    def __init__(self, token_ids: Sequence[int]):
        self.token_ids = _token_list(token_ids, "PhrasalConstraint(token_ids)")

    @property
    def longest(self) -> int:
        """Its length in tokens."""
        return len(self.token_ids)

    def next_tokens(self, matched: tuple[int, ...]) -> list[int]:
        """The tokens that continue ``matched`` (a prefix of the phrase); empty once complete."""
        return [self.token_ids[len(matched)]] if len(matched) < len(self.token_ids) else []

    def __repr__(self) -> str:
        return f"PhrasalConstraint({list(self.token_ids)})"


class DisjunctiveConstraint:
    """One of the token sequences ``options`` must appear (any one: "run", "runs" or "running").

    Args:
        options: a non-empty list of non-empty token-id lists; none may be a prefix of another
            (the search could not tell which one it is meeting).
    """

    def __init__(self, options: Sequence[Sequence[int]]):
        if not isinstance(options, (list, tuple)) or not options:
            raise ValueError(f"DisjunctiveConstraint(options) must be a non-empty list of token-id lists, "
                             f"but is {options!r}.")
        self.options = tuple(_token_list(o, "each option of DisjunctiveConstraint") for o in options)
        self.trie: dict = {}
        for option in self.options:
            node = self.trie
            for token in option:
                node = node.setdefault(token, {})
        if _leaves(self.trie) != len(self.options):
            raise ValueError(f"DisjunctiveConstraint({[list(o) for o in self.options]}): one option is a prefix "
                             "of another (or repeats it); drop the shorter one or make them differ.")

    @property
    def token_ids(self) -> list[list[int]]:
        return [list(o) for o in self.options]

    @property
    def longest(self) -> int:
        """The length of its longest option."""
        return max(len(o) for o in self.options)

    def next_tokens(self, matched: tuple[int, ...]) -> list[int]:
        """The tokens that continue ``matched`` along some option, in the options' order; empty at an option's end."""
        node = self.trie
        for token in matched:
            node = node[token]
        return list(node)

    def __repr__(self) -> str:
        return f"DisjunctiveConstraint({self.token_ids})"


Constraint = Union[PhrasalConstraint, DisjunctiveConstraint]


def _leaves(node: dict) -> int:
    return 1 if not node else sum(_leaves(child) for child in node.values())


@dataclass
class ConstraintProgress:
    """How far one sequence has come in meeting ``constraints`` (see the module docstring).

    Attributes:
        constraints: the call's constraints.
        complete: indices of the met constraints, in the order they were met.
        pending: indices of the constraints not met and not in progress, in the order they are tried.
        current: index of the constraint in progress, or None; ``matched`` its tokens so far.
        completed: all constraints met (further tokens change nothing).
    """

    constraints: tuple
    complete: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    current: Optional[int] = None
    matched: tuple[int, ...] = ()
    completed: bool = False

    @classmethod
    def read(cls, constraints: Sequence[Constraint], token_ids: Sequence[int]) -> "ConstraintProgress":
        """The progress after reading ``token_ids`` (``list[int]``, the whole row) from the start."""
        progress = cls(tuple(constraints), pending=list(range(len(constraints))))
        for token in token_ids:
            if progress.completed:
                break
            progress.add(token)
        return progress

    def copy(self) -> "ConstraintProgress":
        return ConstraintProgress(self.constraints, list(self.complete), list(self.pending), self.current,
                                  self.matched, self.completed)

    def add(self, token: int) -> None:
        """Read one more token."""
        if self.completed:
            return
        if self.current is not None:
            constraint = self.constraints[self.current]
            if token in constraint.next_tokens(self.matched):
                self.matched += (token,)
                if not constraint.next_tokens(self.matched):
                    self._complete()
            else:                                                 # abandoned: pending again, last
                self.pending.append(self.current)
                self.current, self.matched = None, ()
            return
        for position, index in enumerate(self.pending):
            if token in self.constraints[index].next_tokens(()):
                del self.pending[position]
                self.current, self.matched = index, (token,)
                if not self.constraints[index].next_tokens(self.matched):
                    self._complete()
                return

    def _complete(self) -> None:
        self.complete.append(self.current)
        self.current, self.matched = None, ()
        self.completed = not self.pending

    def next_tokens(self) -> list[int]:
        """The tokens that make progress: those continuing the constraint in progress, else those starting a
        pending one (in the pending order, repeats kept); empty once all are met."""
        if self.completed:
            return []
        if self.current is not None:
            return self.constraints[self.current].next_tokens(self.matched)
        return [t for index in self.pending for t in self.constraints[index].next_tokens(())]

    @property
    def bank(self) -> int:
        """``longest * len(complete)`` plus, for the constraint in progress, ``longest - tokens it still needs``."""
        longest = max(c.longest for c in self.constraints)
        bank = longest * len(self.complete)
        if self.current is not None:
            remaining = self.constraints[self.current].longest - len(self.matched)
            bank += longest - remaining
        return bank


def satisfies(constraints: Sequence[Constraint], token_ids: Sequence[int]) -> bool:
    """True when reading ``token_ids`` (a whole row, prompt included) meets every constraint."""
    return ConstraintProgress.read(constraints, token_ids).completed


def check_force_words_ids(name: str, value: Any) -> None:
    """``force_words_ids``: a non-empty list whose items are phrases ``[ids]`` or alternatives ``[[ids], ...]``."""
    constraints_from_words(value, name)


def constraints_from_words(value: Any, name: str = "force_words_ids") -> list[Constraint]:
    """``force_words_ids`` as constraints: ``[ids]`` a :class:`PhrasalConstraint`, ``[[ids], ...]`` a
    :class:`DisjunctiveConstraint`."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of phrases [ids...] or of alternatives "
                         f"[[ids...], [ids...]], but is {value!r}.")
    constraints: list[Constraint] = []
    for item in value:
        try:
            if isinstance(item, list) and item and isinstance(item[0], list):
                constraints.append(DisjunctiveConstraint(item))
            else:
                constraints.append(PhrasalConstraint(item))
        except ValueError as error:
            raise ValueError(f"`{name}`: the item {item!r} is neither a phrase [ids...] nor a list of alternatives "
                             f"[[ids...], ...] of token ids >= 0 ({error})") from None
    return constraints


def as_constraint(value: Any) -> Constraint:
    """Ours as it is; transformers' ``PhrasalConstraint`` / ``DisjunctiveConstraint`` (4.55 and before) as ours,
    from their ``token_ids``. Anything else is a ``ValueError``."""
    if isinstance(value, (PhrasalConstraint, DisjunctiveConstraint)):
        return value
    kind = type(value).__name__ if type(value).__module__.startswith("transformers.") else None
    if kind == "PhrasalConstraint":
        return PhrasalConstraint(value.token_ids)
    if kind == "DisjunctiveConstraint":
        return DisjunctiveConstraint(value.token_ids)
    raise ValueError(f"{value!r} is not a decoding.PhrasalConstraint / decoding.DisjunctiveConstraint (or "
                     "transformers' classes of those names); for plain token ids use force_words_ids=[[ids...], ...].")


def check_constraints(name: str, value: Any) -> None:
    """``constraints``: a non-empty list of :class:`PhrasalConstraint` / :class:`DisjunctiveConstraint`."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of decoding.PhrasalConstraint / "
                         f"decoding.DisjunctiveConstraint, but is {value!r}.")
    for item in value:
        try:
            as_constraint(item)
        except ValueError as error:
            raise ValueError(f"`{name}`: {error}") from None


def call_constraints(constraints: Optional[Sequence[Any]], force_words_ids: Any) -> list[Constraint]:
    """A call's constraints: ``constraints`` first (transformers' classes converted), then those of
    ``force_words_ids`` (the reference's order)."""
    found = [as_constraint(c) for c in constraints or []]
    if force_words_ids is not None:
        found += constraints_from_words(force_words_ids)
    return found


__all__ = ["PhrasalConstraint", "DisjunctiveConstraint", "ConstraintProgress", "ConstraintsNotMet", "satisfies",
           "constraints_from_words", "call_constraints"]
