"""Decoding strategies: each a loop that reads top to bottom."""

from .greedy import greedy_search
from .sample import multinomial, row_seeds, sample, seeded_draw
from .state import SequenceState

__all__ = ["greedy_search", "sample", "multinomial", "row_seeds", "seeded_draw", "SequenceState"]
