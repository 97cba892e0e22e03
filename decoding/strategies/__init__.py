"""Decoding strategies: each a loop that reads top to bottom."""

from .beam import beam_search
from .greedy import greedy_search
from .sample import multinomial, row_seeds, sample, seeded_draw
from .state import SequenceState

__all__ = ["greedy_search", "sample", "beam_search", "multinomial", "row_seeds", "seeded_draw", "SequenceState"]
