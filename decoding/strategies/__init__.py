"""Decoding strategies: each a loop that reads top to bottom."""

from .greedy import greedy_search
from .sample import multinomial, sample
from .state import SequenceState

__all__ = ["greedy_search", "sample", "multinomial", "SequenceState"]
