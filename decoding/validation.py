"""Checks that run before the first forward pass, with errors that say what to change.

Where the reference fails deep inside torch (``IndexError: index out of range in self`` for an id
outside the vocabulary, ``IndexError: tuple index out of range`` for 1-D ids, ...), or silently
ignores a value (``top_p=1.5``), `decoding` raises here instead. docs/api.md lists each difference.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .checks import is_finite, is_int
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


def check_devices(input_ids: Any, attention_mask: Any) -> None:
    """``input_ids`` and ``attention_mask`` hold data (not ``meta``) on one device.

    The model may sit elsewhere: the runner moves each step's ids to the model's device and returns
    the logits to the device of ``input_ids``, where the bookkeeping runs (as the reference does).
    """
    tensors = {name: value for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask))
               if isinstance(value, torch.Tensor)}
    if len(tensors) == 2 and input_ids.device != attention_mask.device:
        raise ValueError(
            f"input_ids is on {input_ids.device} but attention_mask is on {attention_mask.device}; put them on one "
            f"device, e.g. attention_mask.to(input_ids.device) (tokenizer(...).to(device) moves both).")
    for name, value in tensors.items():
        if value.is_meta:
            raise ValueError(f"{name} is on the 'meta' device, which holds no values; create it on a real device "
                             "(for example torch.tensor(..., device='cpu')).")


def check_input_ids(input_ids: Any, vocab_size: Optional[int], bos_token_id: Any = None) -> None:
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
        start = (f"; or pass input_ids=None to start from the bos token ({bos_token_id})"
                 if bos_token_id is not None else "")
        raise ValueError(
            f"input_ids is empty (shape {tuple(input_ids.shape)}); give at least one token per row "
            f"(for example the tokenizer's bos token){start}.")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bad = low if low < 0 else high
        where = (input_ids == bad).nonzero()[0].tolist()
        raise ValueError(
            f"input_ids contains token id {bad} at position {where}, outside the model's vocabulary "
            f"[0, {vocab_size}); was it made by a different tokenizer?")


def check_attention_mask(attention_mask: Any, input_ids: torch.Tensor, past: int = 0) -> None:
    """The mask must be a 0/1 tensor of the shape of ``input_ids``; when continuing a cache that holds
    ``past`` positions, it may instead cover them too (``[batch, past + len]``, only the new tokens given)."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}.")
    if attention_mask.dtype.is_complex:
        raise TypeError(f"attention_mask must hold 0 and 1 as integers (or bool), got dtype {attention_mask.dtype}; "
                        "convert it with attention_mask.long().")
    rows, length = input_ids.shape
    if past and tuple(attention_mask.shape) == (rows, past + length):
        pass
    elif past and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)} and "
            f"past_key_values holds {past} positions: pass the whole sequence with its mask (both "
            f"[{rows}, n], n > {past}), or only the new tokens with the mask of the whole sequence "
            f"([{rows}, {past} + {length}]).")
    elif tuple(attention_mask.shape) != tuple(input_ids.shape):
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


def _special_id_values(value: Any) -> Optional[list]:
    """The ids of a special-token value (an id, a list of ids, an integer tensor), or None when it is none of those."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            return None
        return value.reshape(-1).tolist()
    values = value if isinstance(value, (list, tuple)) else [value]
    return list(values) if all(is_int(v) for v in values) else None


def check_special_tokens(settings: Settings, vocab_size: Optional[int], given: set) -> None:
    """``bos_token_id``, ``eos_token_id`` (one id or a list) and ``pad_token_id`` are ids of the vocabulary.

    Types are checked wherever the value came from; the range ``[0, vocab)`` only for the names in
    ``given`` (keywords and the ``generation_config`` argument): a model's own config is trusted, as
    the reference trusts it (some ship ``pad_token_id=-1``). ``eos_token_id=-1`` passes: it switches EOS
    off (the reference's tests use it) and matches no token.
    """
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(settings, name)
        if value is None:
            continue
        ids = _special_id_values(value)
        if ids is None or (name != "eos_token_id" and len(ids) != 1):
            kind = "a token id or a list of token ids" if name == "eos_token_id" else "one token id (an integer)"
            raise TypeError(f"`{name}` has to be {kind}, but is {_short(value)}.")
        if name not in given:
            continue
        # eos_token_id=-1 switches EOS off (the reference's tests use it): -1 is never an id, so never matched
        allowed = {-1} if name == "eos_token_id" else set()
        outside = sorted({int(t) for t in ids if (t < 0 and int(t) not in allowed)
                          or (vocab_size is not None and t >= vocab_size)})
        if outside:
            raise ValueError(f"`{name}` holds token ids {outside}, outside the model's vocabulary [0, {vocab_size}); "
                             f"use the ids of this model's tokenizer (tokenizer.{name}).")


def check_call_objects(logits_processor: Any, stopping_criteria: Any, streamer: Any) -> None:
    """Processors and criteria are lists of callables; a streamer has ``put`` and ``end`` (or ``on_step``)."""
    for name, value, shape in (("logits_processor", logits_processor, "(input_ids, scores) -> scores"),
                               ("stopping_criteria", stopping_criteria, "(input_ids, scores) -> done")):
        if value is None:
            continue
        # a LogitsProcessorList / StoppingCriteriaList is a list and callable: accepted; a bare callable is not
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or (
                callable(value) and not isinstance(value, (list, tuple))):
            raise TypeError(f"`{name}` has to be a list of callables {shape}, but is {_short(value)}; "
                            f"wrap a single one in a list.")
        for item in value:
            if not callable(item):
                raise TypeError(f"`{name}` holds {_short(item)}, which is not callable; each item is a callable "
                                f"{shape}.")
    if streamer is not None and not callable(getattr(streamer, "on_step", None)) and not (
            callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise TypeError(f"`streamer` has to have put(ids) and end() methods (see decoding.streaming), but is a "
                        f"{type(streamer).__name__}.")


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
    if s.do_sample and s.top_p == 0:
        raise ValueError(
            "`top_p` (=0) keeps no token when sampling (it must be in (0, 1]); use top_k=1 or do_sample=False "
            "for greedy decoding, or top_p=1.0 to turn it off.")
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
    check_contrastive_and_dola(s)
    check_processor_settings(s)  # the rules between processor knobs: processors/checks.py
    _check_beam_variants(s)


# --- contrastive search and DoLa (docs/contrastive-search.md, docs/dola.md) ---

def is_contrastive(settings: Settings) -> bool:
    """Whether the settings ask for contrastive search: ``penalty_alpha > 0`` with ``top_k > 1`` (as the reference)."""
    alpha, k = settings.penalty_alpha, settings.top_k
    return alpha is not None and alpha > 0 and k is not None and k > 1


def check_contrastive_and_dola(s: Settings) -> None:
    """The mixes the reference silently ignores (it drops ``penalty_alpha`` or ``dola_layers``) or refuses."""
    if is_contrastive(s):
        for wrong, why in ((s.do_sample, "do_sample=True"), (s.num_beams > 1, f"num_beams={s.num_beams}"),
                           (not s.use_cache, "use_cache=False"), (s.dola_layers is not None, "dola_layers")):
            if wrong:
                raise ValueError(
                    f"`penalty_alpha` (={s.penalty_alpha}) with top_k={s.top_k} asks for contrastive search, which is "
                    f"greedy, with one beam and a cache: it cannot run with {why}; remove penalty_alpha or {why}.")
    elif s.low_memory and "low_memory" in s.explicit:      # from model.generation_config: ignored, as the reference
        raise ValueError("`low_memory=True` only changes contrastive search (penalty_alpha > 0 with top_k > 1); "
                         "remove it (beam search refuses it too).")
    if s.dola_layers is not None and s.num_beams > 1:
        raise ValueError(f"`dola_layers` (={s.dola_layers!r}) works with greedy search or sampling only, not with "
                         f"num_beams={s.num_beams}; remove dola_layers or set num_beams=1.")


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
