"""The registered samplers beyond the reference, and where they go in the default ("hf") pipeline.

:data:`SAMPLERS` is the one registration list. Each entry is a :class:`~decoding.declarations.Sampler`
declared at the end of the sampler's own module: its knobs (default, range, help), how it is
built from the settings, its stage and its place in each engine preset. From this list come the
pipeline below, the knobs of :data:`decoding.knobs.KNOBS` (so settings, validation, the CLI flags
and the docs table), the presets of ``processors/orders.py`` and ``BEYOND_PROCESSORS``.

- ``beyond_processors``: the samplers of stage ``penalty`` (presence and frequency penalties, DRY,
  ``logit_bias``, ``allowed_token_ids``), in registration order. They change which token greedy
  search picks, so, like the reference's own non-warper processors, they run with greedy and
  sampling alike; they go after the reference's processors and before the user's
  ``logits_processor=[...]``.
- ``beyond_warpers``: the samplers of stage ``warper``, only when sampling, after the reference's
  warpers in registration order (mirostat last, because its ``accept`` needs the distribution it
  truncated); one that ``replaces`` a warper (dynamic temperature replaces ``temperature``) goes
  first instead and drops that warper.

Each is built only when its knob is set (``None`` means off). To add a sampler, see
docs/processors.md ("Adding a sampler").
"""

from __future__ import annotations

from ..declarations import PENALTY, WARPER, Sampler
from .base import ProcessorFn
from .bias import ALLOWED_TOKEN_IDS, LOGIT_BIAS
from .dry import DRY
from .dynatemp import DYNAMIC_TEMPERATURE
from .mirostat import MIROSTAT
from .presence import FREQUENCY_PENALTY, PRESENCE_PENALTY
from .top_n_sigma import TOP_N_SIGMA
from .xtc import XTC

# The registration list: the order is the build order within each stage.
SAMPLERS: tuple[Sampler, ...] = (
    PRESENCE_PENALTY, FREQUENCY_PENALTY, DRY, LOGIT_BIAS, ALLOWED_TOKEN_IDS,
    DYNAMIC_TEMPERATURE, TOP_N_SIGMA, XTC, MIROSTAT,
)

# Defaults of the companion knobs when only the main one is set (llama.cpp's defaults).
DEFAULTS = {knob.name: knob.companion for sampler in SAMPLERS for knob in sampler.knobs if knob.companion is not None}


def beyond_processors(settings, context) -> list[ProcessorFn]:
    """The penalties and biases beyond the reference that these settings turn on (greedy and sampling)."""
    built = (sampler.build(settings, context) for sampler in SAMPLERS if sampler.stage == PENALTY)
    return [processor for processor in built if processor is not None]


def beyond_warpers(settings, context, warpers: list[ProcessorFn]) -> list[ProcessorFn]:
    """The reference's ``warpers`` with the samplers beyond it that these settings turn on, placed as above."""
    warpers = list(warpers)
    for sampler in SAMPLERS:
        if sampler.stage != WARPER:
            continue
        processor = sampler.build(settings, context)
        if processor is None:
            continue
        if sampler.replaces is None:
            warpers.append(processor)
        else:
            warpers = [processor] + [w for w in warpers if getattr(w, "name", None) != sampler.replaces]
    return warpers
