"""Each engine's documented processor order, and a function that reorders a built pipeline by it.

The same knobs give different tokens on different engines because they apply the same processors
in different orders: ``transformers`` and vLLM divide by the temperature before truncating
(top-k, top-p, min-p), llama.cpp and mlx-lm truncate first and apply the temperature last; min-p
comes before top-k/top-p in vLLM and after them elsewhere. A preset is the list of processor
names (each processor's ``name``, which is its keyword) in the engine's order:

- ``"hf"``: ``model.generate`` in transformers 5.23 (``processors/pipeline.py``), with the
  processors beyond the reference placed as ``processors/beyond.py`` says. Applying it changes
  nothing: it is the order ``build_pipeline`` already builds.
- ``"vllm"``: vLLM v1's ``Sampler``: allowed-token ids, bad words, min-tokens, logit bias, then the
  penalties (repetition, frequency, presence), then temperature, then min-p, then top-k and top-p.
- ``"llama.cpp"``: ``common_sampler_init``: logit bias first, then the default sampler chain
  ``penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature``; mirostat, when
  on, samples after the temperature (it replaces the end of the chain there).
- ``"mlx"``: mlx-lm (``sample_utils.py``): ``make_logits_processors`` (logit bias, repetition
  penalty, presence and frequency penalties), then ``make_sampler``'s chain ``top_p, min_p, xtc,
  top_k``, the temperature last inside ``categorical_sampling``.

In every preset ``dynatemp_range`` takes the temperature's place, and watermarking and
``renormalize_logits`` stay last. Samplers an engine lacks (top-n-sigma, XTC and mirostat in
vLLM; top-n-sigma and mirostat in mlx-lm) are placed by us after that engine's own samplers,
mirostat last.

Only the engines' own processors are listed here (:data:`ENGINE_ORDERS`); each sampler beyond the
reference declares its place in every preset where it is registered
(``processors/beyond.py`` ``SAMPLERS``), and :func:`preset` inserts it there.
"""

from __future__ import annotations

from typing import Sequence, Union

from ..declarations import FIRST, LAST, PENALTY, WARPER
from .base import LogitsProcessorList
from .beyond import SAMPLERS

_FINISHERS = ["watermarking_config", "renormalize_logits"]

# The reference's build order (processors/pipeline.py): its processors, then its warpers.
_HF_PROCESSORS = [
    "guidance_scale", "sequence_bias", "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "prefix_allowed_tokens_fn",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
]
_HF_WARPERS = ["temperature", "top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"]

# Each engine's own samplers, by the reference's keyword names, in the engine's order.
ENGINE_ORDERS: dict[str, list[str]] = {
    "vllm": ["bad_words_ids", "min_length", "min_new_tokens", "repetition_penalty", "temperature", "min_p", "top_k",
             "top_p"],
    "llama.cpp": ["repetition_penalty", "top_k", "typical_p", "top_p", "min_p", "temperature"],
    "mlx": ["repetition_penalty", "top_p", "min_p", "top_k", "temperature"],
}


def _hf_order(samplers) -> list[str]:
    """The default order: the reference's processors, the penalty samplers, then the warpers."""
    penalties = [s.name for s in samplers if s.stage == PENALTY]
    replacing = [s.name for s in samplers if s.stage == WARPER and s.replaces is not None]
    warpers = [s.name for s in samplers if s.stage == WARPER and s.replaces is None]
    return _HF_PROCESSORS + penalties + replacing + _HF_WARPERS + warpers + _FINISHERS


def _engine_order(engine: str, samplers) -> list[str]:
    """An engine's own order with each sampler inserted at the place it declares for that engine."""
    placed = [(s.name, s.places.get(engine)) for s in samplers if s.places.get(engine) is not None]
    names = [name for name, place in placed if place == FIRST] + ENGINE_ORDERS[engine]
    pending = [(name, place.split()) for name, place in placed if place not in (FIRST, LAST)]
    while pending:   # an anchor may be a sampler registered later: go round until every one is placed
        waiting = []
        for name, (where, anchor) in pending:
            if anchor in names:
                names.insert(names.index(anchor) + (where == "after"), name)
            else:
                waiting.append((name, (where, anchor)))
        if len(waiting) == len(pending):
            raise ValueError(f"preset {engine!r}: {[f'{n} {w} {a}' for n, (w, a) in waiting]} name processors "
                             "that are not in the preset.")
        pending = waiting
    return names + [name for name, place in placed if place == LAST] + _FINISHERS


def preset(engine: str, samplers=SAMPLERS) -> list[str]:
    """The processor names of ``engine``'s order (``"hf"``, ``"vllm"``, ``"llama.cpp"`` or ``"mlx"``)."""
    return _hf_order(samplers) if engine == "hf" else _engine_order(engine, samplers)


ORDERS: dict[str, list[str]] = {engine: preset(engine) for engine in ("hf", *ENGINE_ORDERS)}


def processor_name(processor) -> str:
    """A processor's ``name`` (its keyword for ours), else its class name (user or reference processors)."""
    return getattr(processor, "name", None) or type(processor).__name__


def check_order(order) -> None:
    """``order`` is None, a preset name of :data:`ORDERS`, or a list of processor names."""
    if order is None or (isinstance(order, str) and order in ORDERS):
        return
    if isinstance(order, (list, tuple)) and all(isinstance(name, str) for name in order):
        return
    raise ValueError(f"`order` must be one of {sorted(ORDERS)} or a list of processor names, but is {order!r}.")


def reorder(pipeline: Sequence, order: Union[str, Sequence[str], None]) -> LogitsProcessorList:
    """``pipeline`` reordered by ``order`` (a preset name of :data:`ORDERS` or a list of names).

    Processors whose name the order lists are sorted by their place in it (processors with the same
    name keep their relative order). A processor the order does not name (a user's processor, or
    one the engine does not have) travels with the named processor just before it in ``pipeline``,
    right after it; one with no named processor before it stays at the front. ``None`` and
    ``"hf"`` return the pipeline in its built order.
    """
    check_order(order)
    if order is None or order == "hf":
        return LogitsProcessorList(pipeline)
    names = ORDERS[order] if isinstance(order, str) else list(order)
    rank = {name: index for index, name in enumerate(names)}
    keys, anchor = [], -1
    for index, processor in enumerate(pipeline):
        name = processor_name(processor)
        if name in rank:
            anchor = rank[name]
            keys.append((anchor, 0, index))
        else:
            keys.append((anchor, 1, index))
    return LogitsProcessorList(pipeline[i] for *_, i in sorted(keys))
