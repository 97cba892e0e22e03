"""Insight into a generation: the per-step trace (:mod:`.trace`), score any text (:func:`score`) and render a
visual report (:mod:`decoding.insight.report`). docs/inspecting.md shows them all."""

from .scoring import SequenceScores, score
from .divergence import Divergence, diff
from .trace import Trace, Tracer

__all__ = ["score", "SequenceScores", "Trace", "Tracer", "diff", "Divergence"]
