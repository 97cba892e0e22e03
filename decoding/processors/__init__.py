"""Logits processors: ``(input_ids [rows, len] int64, scores [rows, vocab] float32) -> scores``."""

from .base import LogitsProcessor, LogitsProcessorList, Processor
from .pipeline import PipelineContext, build_pipeline
from .warpers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

__all__ = [
    "LogitsProcessor", "LogitsProcessorList", "Processor", "PipelineContext", "build_pipeline", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
]
