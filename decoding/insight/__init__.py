"""Insight into a generation: score any text (:func:`score`) and render a visual report
(:mod:`decoding.insight.report`). docs/inspecting.md shows both."""

from .scoring import SequenceScores, score

__all__ = ["score", "SequenceScores"]
