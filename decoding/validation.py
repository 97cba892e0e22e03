"""Checks that run before the first forward pass, with errors that say what to change.

Where the reference fails deep inside torch (``IndexError: index out of range in self`` for an id
outside the vocabulary, ``IndexError: tuple index out of range`` for 1-D ids, ...), or silently
ignores a value (``top_p=1.5``), `decoding` raises here instead. docs/api.md lists each difference.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .checks import is_finite
from .config import Settings
from .knobs import KNOBS, REFUSED
from .processors.checks import check_processor_inputs, check_processor_settings  # noqa: F401 (re-exported)


def input_vocab_size(model: Any) -> Optional[int]:
    """How many ids the model's input embedding accepts (None when it cannot be told)."""
    try:
        embeddings = model.get_input_embeddings()
        return int(embeddings.num_embeddings) if hasattr(embeddings, "num_embeddings") else int(embeddings.weight.shape[0])
    except (AttributeError, NotImplementedError, TypeError):
        config = getattr(model, "config", None)
        size = getattr(config.get_text_config(decoder=True), "vocab_size", None) if config is not None else None
        return int(size) if size is not None else None


def check_input_ids(input_ids: Any, vocab_size: Optional[int]) -> None:
    """``input_ids`` must be a 2-D integer tensor ``[batch, length]`` of ids in ``[0, vocab)``."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids must be a torch.LongTensor of shape [batch, length], got {type(input_ids).__name__}; "
            "wrap token ids with torch.tensor([[...]]) or use tokenizer(..., return_tensors='pt').")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise TypeError(
            f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}; "
            "convert them with input_ids.long().")
    if input_ids.dim() != 2:
        fix = " Add a batch dimension with input_ids[None]." if input_ids.dim() == 1 else ""
        raise ValueError(f"input_ids must be 2-D [batch, length], got shape {tuple(input_ids.shape)}.{fix}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids is empty (shape {tuple(input_ids.shape)}); give at least one token per row "
            "(for example the tokenizer's bos token).")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bad = low if low < 0 else high
        where = (input_ids == bad).nonzero()[0].tolist()
        raise ValueError(
            f"input_ids contains token id {bad} at position {where}, outside the model's vocabulary "
            f"[0, {vocab_size}); was it made by a different tokenizer?")


def check_attention_mask(attention_mask: Any, input_ids: torch.Tensor) -> None:
    """The mask must be a 0/1 tensor of exactly the shape of ``input_ids``."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}.")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
            f"{tuple(input_ids.shape)}; they must match (1 for real tokens, 0 for left padding).")
    if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must contain only 0 (padding) and 1 (real tokens).")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_not_yet_implemented(settings: Settings, call_arguments: dict[str, Any]) -> None:
    """Refuse the reference's keywords this version does not implement, instead of silently ignoring them.

    ``call_arguments`` are the arguments of ``generate`` that are not settings (``past_key_values``
    among them); ``settings.refused`` holds the others that are on (see ``config._refused``).

    Raises:
        NotImplementedError: naming the keyword, what it would turn on, where it was set and what to do.
    """
    found = {name: (value, "keyword") for name, value in call_arguments.items()
             if name in REFUSED and not REFUSED[name].is_off(value)}
    found.update(settings.refused)
    for name, (value, source) in found.items():
        where = {"keyword": "", "generation_config": " (in generation_config)",
                 "model.generation_config": " (in model.generation_config)"}[source]
        fix = (f"set model.generation_config.{name} = None" if source == "model.generation_config"
               else "remove it")
        raise NotImplementedError(
            f"`{name}={_short(value)}`{where} asks for {REFUSED[name].what}, which decoding does not implement; "
            f"{fix}, or use model.generate for this call. docs/strategies.md lists what decoding implements and "
            "how to plug in your own strategy.")


def check_settings(settings: Settings) -> None:
    """Range and type checks of the knobs, before anything runs.

    Each knob's own range comes from its declaration in :data:`decoding.knobs.KNOBS`; the rules
    between knobs are written out below.
    """
    s = settings
    for name, knob in KNOBS.items():
        if name in s.values:
            knob.validate(s.values[name])
    if s.do_sample and s.temperature == 0:
        raise ValueError(
            "`temperature` (=0) has to be strictly positive when do_sample=True; for greedy "
            "decoding set do_sample=False.")
    if s.num_beams == 1 and not s.do_sample and s.num_return_sequences != 1:
        raise ValueError(
            "Greedy methods (do_sample != True) without beam search do not support "
            f"`num_return_sequences` different than 1 (got {s.num_return_sequences}); set do_sample=True "
            "or num_beams >= num_return_sequences.")
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
        raise ValueError(
            f"`num_return_sequences` ({s.num_return_sequences}) has to be smaller or equal to "
            f"`num_beams` ({s.num_beams}).")
    if s.num_beams > 1 and not is_finite(s.length_penalty):
        raise ValueError(
            f"`length_penalty` must be a finite number (1.0 by default; > 0 favours longer beam hypotheses, "
            f"< 0 shorter ones), but is {s.length_penalty!r}.")
    check_processor_settings(s)  # the rules between processor knobs: processors/checks.py
    _check_beam_variants(s)


# diverse (group) beam search and constrained beam search: the rules between their knobs and num_beams
def _check_beam_variants(s: Settings) -> None:
    """``num_beam_groups`` / ``diversity_penalty`` and ``constraints`` / ``force_words_ids`` against the other knobs."""
    groups, penalty = s.num_beam_groups, s.diversity_penalty or 0.0
    constrained = s.constraints is not None or s.force_words_ids is not None
    if groups > 1:
        if s.num_beams % groups != 0:
            raise ValueError(f"`num_beams` ({s.num_beams}) must be a multiple of `num_beam_groups` ({groups}): every "
                             f"group gets num_beams / num_beam_groups beams; set num_beams={groups * 2}, for one.")
        if s.do_sample:
            raise ValueError(f"diverse beam search (num_beam_groups={groups}) does not sample; set do_sample=False.")
        if penalty == 0.0:
            raise ValueError(f"`num_beam_groups={groups}` needs `diversity_penalty` > 0, or the groups decode the same "
                             "beams; set diversity_penalty=1.0, for one (or num_beam_groups=1).")
    elif penalty != 0.0:
        raise ValueError(f"`diversity_penalty={penalty!r}` works between beam groups; set num_beam_groups >= 2 (and "
                         "num_beams a multiple of it), or diversity_penalty=0.0.")
    if constrained:
        keyword = "constraints" if s.constraints is not None else "force_words_ids"
        if s.num_beams <= 1:
            raise ValueError(f"`{keyword}` asks for constrained beam search, which needs num_beams > 1 (it is "
                             f"{s.num_beams}); set num_beams=4, for one.")
        if s.do_sample:
            raise ValueError(f"constrained beam search (`{keyword}`) does not sample; set do_sample=False.")
        if groups > 1:
            raise ValueError(f"constrained beam search (`{keyword}`) does not split beams into groups; set "
                             "num_beam_groups=1.")
