"""What beam search offers beyond its loop (which is :mod:`decoding.strategies.beam`).

- :mod:`.run`: from ``generate``'s resolved settings to the loop and back to the reference's output.
- :mod:`.streaming`: beam streamers (every live beam at every step) and plain streamers with beams.
- :mod:`.tree`: the search tree as plain data (``output_beam_tree=True``).

They live in a sub-package of their own because each is only about beams: the top-level modules
are the boxes every strategy shares (runner, processors, stopping, streaming, outputs).
"""

from .streaming import BeamStreamer, BeamTextStreamer, LiveBeam
from .tree import path, returned

__all__ = ["BeamStreamer", "BeamTextStreamer", "LiveBeam", "path", "returned"]
