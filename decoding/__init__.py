"""decoding: a readable, exact and fast reimplementation of ``model.generate``.

The drop-in door (this top level)::

    import decoding
    out = decoding.generate(model, input_ids, attention_mask=mask, max_new_tokens=40,
                            do_sample=True, temperature=0.7, top_k=50, top_p=0.9)

The research door is the sub-packages, each complete (docs/api.md, docs/research.md):

- :mod:`decoding.strategies`: the strategy contract (``PreparedCall``, ``generate(strategy=...)``),
  the loops, ``SequenceState``;
- :mod:`decoding.processors`: every processor, the pipeline builder, the engine order presets;
- :mod:`decoding.runner`: ``ModelRunner`` (prefill, step, row operations);
- :mod:`decoding.stopping`, :mod:`decoding.streaming`, :mod:`decoding.seeding`, :mod:`decoding.config`.
"""

from .comparison import Comparison, compare
from .errors import ChatTemplateError, GenerationInterrupted, UnknownArgumentError
from .generation import generate, pipeline
from .insight import diff, score
from .outputs import GenerateOutput
from .processors import LogitsProcessor, LogitsProcessorList
from .scores import compute_transition_scores
from .stopping import StoppingCriteria, StoppingCriteriaList
from .strategies.beam import BeamStreamer, BeamTextStreamer
from .strategies.speculative import DraftModel, EarlyExit, PromptLookup
from .streaming import BaseStreamer, TextIteratorStreamer, TextStreamer

__version__ = "0.1.0"

__all__ = [
    "generate", "pipeline", "score", "diff", "compare", "Comparison", "GenerateOutput", "compute_transition_scores",
    "GenerationInterrupted", "UnknownArgumentError", "ChatTemplateError",
    "LogitsProcessor", "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList",
    "BaseStreamer", "TextStreamer", "TextIteratorStreamer", "BeamStreamer", "BeamTextStreamer",
    "DraftModel", "EarlyExit", "PromptLookup",
]

# Loading, chat and memory (docs/loading.md, docs/chat.md); the command line is `python -m decoding`.
from .conversation import ChatCache, chat  # noqa: E402
from .loading import LoadedModel, load, release  # noqa: E402

__all__ += ["load", "LoadedModel", "release", "chat", "ChatCache"]

# Constrained beam search's constraints (docs/constrained-beam-search.md): generate(constraints=[...]).
from .constraints import DisjunctiveConstraint, PhrasalConstraint  # noqa: E402

__all__ += ["PhrasalConstraint", "DisjunctiveConstraint"]

# Names the top level exported before the research door moved them into their sub-packages; they keep
# working for one release, with a DeprecationWarning that names the new place.
_MOVED = {
    "Settings": "decoding.config", "resolve_settings": "decoding.config", "left_pad": "decoding.inputs",
    "PipelineContext": "decoding.processors", "build_pipeline": "decoding.processors",
    "TemperatureLogitsWarper": "decoding.processors", "TopKLogitsWarper": "decoding.processors",
    "TopPLogitsWarper": "decoding.processors", "ModelRunner": "decoding.runner",
    "MaxLengthCriteria": "decoding.stopping", "MaxTimeCriteria": "decoding.stopping",
    "EosTokenCriteria": "decoding.stopping", "LiveBeam": "decoding.strategies.beam",
    "Draft": "decoding.strategies.speculative", "Drafter": "decoding.strategies.speculative",
    "SpeculationStats": "decoding.strategies.speculative",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"decoding.{name} moved to {_MOVED[name]}.{name}; the top-level name goes in the next "
                      "release.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'decoding' has no attribute {name!r}")
