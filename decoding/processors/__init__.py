"""Logits processors: ``(input_ids [rows, len] int64, scores [rows, vocab] float32) -> scores``.

One class per knob of ``model.generate``, with the reference's class name and constructor, grouped
by family: ``penalties``, ``bans``, ``lengths``, ``warpers``, ``guidance``, ``watermark``,
``normalize``. ``pipeline.build_pipeline`` puts them in the reference's order.
"""

from .bans import (EncoderNoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor, NoRepeatNGramLogitsProcessor,
                   PrefixConstrainedLogitsProcessor, SequenceBiasLogitsProcessor,
                   SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor)
from .base import Capabilities, LogitsProcessor, LogitsProcessorList, Processor, capabilities
from .diversity import HammingDiversityLogitsProcessor
from .guidance import UnbatchedClassifierFreeGuidanceLogitsProcessor
from .lengths import (ExponentialDecayLengthPenalty, ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor,
                      MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor)
from .normalize import InfNanRemoveLogitsProcessor, LogitNormalization
from .penalties import EncoderRepetitionPenaltyLogitsProcessor, RepetitionPenaltyLogitsProcessor
from .pipeline import PipelineContext, build_pipeline
from .warpers import (EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TemperatureLogitsWarper,
                      TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)
from .watermark import SynthIDTextWatermarkLogitsProcessor, WatermarkLogitsProcessor

# Every processor class of the reference that `decoding` implements, in the reference's build order.
REFERENCE_PROCESSORS = (
    UnbatchedClassifierFreeGuidanceLogitsProcessor, SequenceBiasLogitsProcessor,
    EncoderRepetitionPenaltyLogitsProcessor, RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor,
    EncoderNoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor, MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor, PrefixConstrainedLogitsProcessor, ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor, InfNanRemoveLogitsProcessor, ExponentialDecayLengthPenalty,
    SuppressTokensLogitsProcessor, SuppressTokensAtBeginLogitsProcessor, TemperatureLogitsWarper,
    TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper,
    EpsilonLogitsWarper, EtaLogitsWarper, WatermarkLogitsProcessor, SynthIDTextWatermarkLogitsProcessor,
    LogitNormalization,
)

__all__ = [
    "LogitsProcessor", "LogitsProcessorList", "Processor", "Capabilities", "capabilities", "PipelineContext",
    "build_pipeline", "HammingDiversityLogitsProcessor",
    "REFERENCE_PROCESSORS", *(cls.__name__ for cls in REFERENCE_PROCESSORS),
]

# Beyond the reference (docs/processors.md#beyond-the-reference): the registered samplers
# (`beyond.SAMPLERS`); `orders` holds the engines' order presets.
from .beyond import SAMPLERS  # noqa: E402
from .orders import ORDERS, reorder  # noqa: E402

BEYOND_PROCESSORS = tuple(sampler.processor for sampler in SAMPLERS)
globals().update({cls.__name__: cls for cls in BEYOND_PROCESSORS})   # each importable from here, as registered
__all__ += ["BEYOND_PROCESSORS", "SAMPLERS", "ORDERS", "reorder", *(cls.__name__ for cls in BEYOND_PROCESSORS)]
