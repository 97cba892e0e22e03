"""Decoding strategies: each a loop that reads top to bottom, behind one contract.

- :mod:`.call`: :class:`PreparedCall`, everything a strategy is handed;
- :mod:`.contract`: the dispatch table, :func:`run_strategy` (``.partial`` on failure, in one place);
- :mod:`.sampling`: greedy search and sampling, one loop ending in a chooser (:mod:`.choosers`);
- :mod:`.beam`: beam search and beam sampling, with beam streaming and the search tree;
- :mod:`.speculative`: speculative decoding, with its drafters, block runner and ragged rows;
- :mod:`.state`: the growing sequences, done flags, recorded outputs and streaming every loop shares.
"""

from ..seeding import row_seeds
from .beam import BeamConfig, beam_search
from .call import PreparedCall
from .choosers import argmax, multinomial, seeded_draw
from .contract import STRATEGIES, Strategy, mode, run_strategy
from .sampling import decode, greedy_search, sample
from .speculative import speculative_decoding
from .state import SequenceState, StepOutputs

__all__ = ["PreparedCall", "Strategy", "STRATEGIES", "mode", "run_strategy", "decode", "greedy_search", "sample",
           "argmax", "multinomial", "seeded_draw", "row_seeds", "beam_search", "BeamConfig",
           "speculative_decoding", "SequenceState", "StepOutputs"]
