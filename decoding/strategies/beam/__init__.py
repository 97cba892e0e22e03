"""Beam search and beam sampling (``num_beams > 1``): the loop, and what only beams need.

- :mod:`.search`: the loop (:func:`beam_search`), read top to bottom, and one function per step;
- :mod:`.run`: the family's entry in the strategy table: checks, then from a prepared call to the
  loop and back to the reference's output object;
- :mod:`.streaming`: beam streamers (every live beam at every step) and plain streamers with beams;
- :mod:`.tree`: the search tree as plain data (``output_beam_tree=True``).
"""

from .search import BeamConfig, BeamResult, BeamState, BeamStep, Candidates, beam_search
from .streaming import BeamStreamer, BeamTextStreamer, LiveBeam
from .tree import path, returned

__all__ = ["beam_search", "BeamConfig", "BeamState", "BeamStep", "BeamResult", "Candidates",
           "BeamStreamer", "BeamTextStreamer", "LiveBeam", "path", "returned"]
