"""Decoding strategies: each a loop that reads top to bottom."""

from .beam import beam_search
from .greedy import greedy_search
from .sample import multinomial, sample
from .state import SequenceState

__all__ = ["greedy_search", "sample", "multinomial", "SequenceState", "beam_search"]
