"""What `generate` returns when ``return_dict_in_generate=True``: the reference's own output classes.

:class:`GenerateOutput` subclasses transformers' ``GenerateDecoderOnlyOutput`` (greedy, sampling,
speculation) and :class:`BeamGenerateOutput` its ``GenerateBeamDecoderOnlyOutput`` (beam search and
beam sampling), so ``isinstance`` checks and code written for ``model.generate``'s output work
unchanged. Each adds one field, ``trace``: what `decoding` records beyond the reference (the beam
tree, speculation statistics, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput


@dataclass
class GenerateOutput(GenerateDecoderOnlyOutput):
    """The reference's ``GenerateDecoderOnlyOutput``, plus ``trace``.

    Attributes:
        sequences: ``[rows, length]`` int64, prompt (with its padding) plus generated ids.
        scores: one ``[rows, vocab]`` float32 tensor per step, after every processor (``-inf`` where
            filtered), when ``output_scores=True``; else None.
        logits: one ``[rows, vocab]`` float32 tensor per step, raw, when ``output_logits=True``.
        attentions, hidden_states: as the reference, when requested.
        past_key_values: the KV cache (it holds ``length - 1`` positions: the last token is never fed); from
            transformers 5.24 the field is ``cache``, as the reference names it (``past_key_values`` still reads it).
        trace: extra information recorded by `decoding` (``trace["speculation"]``: a ``SpeculationStats``).

    It is a ``transformers.utils.ModelOutput``: attribute access, ``out["sequences"]``, ``out[0]``,
    ``"scores" in out`` and ``keys()`` all work; fields that are None are absent from ``keys()``.
    """

    trace: Optional[dict] = None


@dataclass
class BeamGenerateOutput(GenerateBeamDecoderOnlyOutput):
    """The reference's ``GenerateBeamDecoderOnlyOutput``, plus ``trace``.

    Attributes (besides :class:`GenerateOutput`'s):
        sequences_scores: ``[rows]`` float32 length-normalised scores (with ``output_scores=True``).
        beam_indices: ``[rows, steps]`` int32 flat beam row each token came from, -1 after the end.
        trace: ``trace["beam_tree"]`` with ``output_beam_tree=True`` (:mod:`decoding.strategies.beam.tree`).
    """

    trace: Optional[dict] = None


#: Every class a strategy may return (the reference's own ones too: a strategy may build them).
OUTPUT_CLASSES: tuple[type, ...] = (GenerateDecoderOnlyOutput, GenerateBeamDecoderOnlyOutput)


def is_output(value: Any) -> bool:
    """Whether ``value`` is one of the output classes ``generate`` returns (ours or the reference's)."""
    return isinstance(value, OUTPUT_CLASSES)
