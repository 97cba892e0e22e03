"""decoding: a readable, exact and fast reimplementation of ``model.generate``.

The drop-in door::

    import decoding
    out = decoding.generate(model, input_ids, attention_mask=mask, max_new_tokens=40,
                            do_sample=True, temperature=0.7, top_k=50, top_p=0.9)

The research door: every box of the data flow is public (see docs/how-it-works.md).
"""

from .comparison import Comparison, compare
from .config import Settings, resolve_settings
from .errors import GenerationInterrupted, UnknownArgumentError
from .generation import generate, pipeline
from .inputs import left_pad
from .outputs import GenerateOutput
from .processors import (LogitsProcessor, LogitsProcessorList, PipelineContext, TemperatureLogitsWarper,
                         TopKLogitsWarper, TopPLogitsWarper, build_pipeline)
from .runner import ModelRunner
from .scores import compute_transition_scores
from .stopping import (EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StoppingCriteria,
                       StoppingCriteriaList)
from .streaming import BaseStreamer, TextIteratorStreamer, TextStreamer
from .strategies.beam import BeamStreamer, BeamTextStreamer, LiveBeam
from .strategies.speculative import Draft, Drafter, DraftModel, EarlyExit, PromptLookup, SpeculationStats

__version__ = "0.1.0"

__all__ = [
    "generate", "pipeline", "compare", "Comparison", "GenerateOutput", "GenerationInterrupted", "Settings", "UnknownArgumentError",
    "resolve_settings", "left_pad", "LogitsProcessor", "LogitsProcessorList", "PipelineContext",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "build_pipeline", "ModelRunner",
    "StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria",
    "EosTokenCriteria", "BaseStreamer", "TextStreamer", "TextIteratorStreamer",
    "BeamStreamer", "BeamTextStreamer", "LiveBeam", "compute_transition_scores",
    "Draft", "Drafter", "DraftModel", "EarlyExit", "PromptLookup", "SpeculationStats",
]

# Loading, chat and memory (docs/loading.md, docs/chat.md); the command line is `python -m decoding`.
from .conversation import ChatTemplateError, chat  # noqa: E402
from .loading import LoadedModel, load, release  # noqa: E402

__all__ += ["load", "LoadedModel", "release", "chat", "ChatTemplateError"]
