"""Key/value caches: which one a call uses, built and checked in one place.

A call runs on one of three kinds of cache, all ``transformers`` cache objects:

- a ``DynamicCache`` (the default; sliding-window layers where the model's config has them), which
  grows with the sequence;
- a cache named by ``cache_implementation`` as the reference names it (:data:`IMPLEMENTATIONS`):
  ``"static"`` is a fixed-shape ``StaticCache`` sized to the call (``max_length - 1`` positions, or
  ``max_cache_len`` if larger, and never smaller than the model's previous static cache, as the
  reference sizes it, so repeated calls keep one shape), ``"quantized"`` a ``QuantizedCache``
  configured by ``cache_config``;
- the caller's own (``past_key_values=``), continued from where it stands: a cache a previous call
  returned, or one filled by the caller's own forwards.

Everything that depends on which kind it is lives here: :func:`check_cache_request` (the refusals,
before any forward), :func:`build_cache`, :func:`past_length` and :func:`prepared_mask` (a static
cache's forwards take the 4-D mask the reference builds for them: fixed-shape steps).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any, Optional

import torch

from .versions import new_dynamic_cache

#: Names that give a ``StaticCache`` (the last five are the reference's deprecated aliases).
STATIC = ("static", "offloaded_static", "sliding_window", "hybrid_chunked", "offloaded_hybrid",
          "offloaded_hybrid_chunked")
#: Every ``cache_implementation`` the reference accepts for ``generate`` (``"paged"`` is refused: it
#: reroutes the call to continuous batching). ``"hybrid"`` is the reference's old default for
#: sliding-window checkpoints: it unsets it, so it gives the default ``DynamicCache``, as ``"dynamic"``.
IMPLEMENTATIONS = ("dynamic", "hybrid", "offloaded", "quantized") + STATIC
#: The ``cache_config["backend"]`` of ``"quantized"`` and the package each one needs (None: torch alone).
QUANTIZED_BACKENDS = {"quanto": ("optimum.quanto", "optimum-quanto"), "hqq": ("hqq", "hqq"), "fp8": None}


def is_offloaded(implementation: Optional[str]) -> bool:
    """True for the names whose cache moves layers between an accelerator and CPU memory."""
    return implementation is not None and implementation.startswith("offloaded")


def take_cache(past_key_values: Any, kwargs: dict[str, Any]) -> Any:
    """The cache to continue, given as ``past_key_values=`` or as ``cache=`` (transformers 5.24's name for
    it; either name works with every release). Pops ``cache`` from ``kwargs``.

    Raises:
        ValueError: both names were given a cache.
    """
    cache = kwargs.pop("cache", None)
    if cache is not None and past_key_values is not None:
        raise ValueError("cache= and past_key_values= were both given; they are two names of one argument (the "
                         "cache to continue): pass one.")
    return past_key_values if cache is None else cache


def normalized(implementation: Optional[str]) -> Optional[str]:
    """The name as the reference uses it: ``"hybrid"`` (the old default of sliding-window checkpoints,
    which the reference unsets) is None; every other name is itself."""
    return None if implementation == "hybrid" else implementation


def check_cache_request(implementation: Optional[str], cache_config: Any, user_cache: Any, use_cache: bool,
                        device: torch.device) -> None:
    """Refuse, before any forward, a cache request that cannot run (each message says what to do instead).

    Args:
        implementation: the resolved ``cache_implementation`` (None: the default).
        cache_config: the resolved ``cache_config`` (a dict, for ``"quantized"``).
        user_cache: ``past_key_values`` as passed (None: none).
        use_cache: the resolved ``use_cache``.
        device: the model's device.

    Raises:
        ValueError: an unknown name, a tuple as ``past_key_values``, a cache together with ``cache_implementation``,
            a cache with ``use_cache=False``, or an unknown quantization backend.
        NotImplementedError: ``"paged"``, an offloaded cache on a CPU model, or a quantized cache whose
            backend package is not installed (the message gives the ``pip install``).
    """
    implementation = normalized(implementation)
    if user_cache is not None:
        if isinstance(user_cache, (tuple, list)):
            raise ValueError("past_key_values as a tuple of tensors is not supported (nor by model.generate since "
                             "transformers 4.56): pass a transformers Cache, such as the DynamicCache a previous "
                             "call returned in out.past_key_values.")
        if not hasattr(user_cache, "get_seq_length"):
            raise TypeError(f"past_key_values must be a transformers Cache (DynamicCache, StaticCache, ...), got "
                            f"{type(user_cache).__name__}.")
        if implementation is not None:
            raise ValueError(f"past_key_values (a cache to continue) and cache_implementation={implementation!r} "
                             "(a new cache to build) were both given; pass only one of them, as model.generate "
                             "requires.")
        if not use_cache:
            raise ValueError("past_key_values was given with use_cache=False: a cache can only be continued with "
                             "use_cache=True (the default).")
        return
    if implementation == "paged":
        raise NotImplementedError(
            "cache_implementation='paged' reroutes model.generate to continuous batching (generate_batch), which "
            "decoding does not implement; leave cache_implementation unset (or use 'static').")
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`cache_implementation` must be one of {IMPLEMENTATIONS} (or None), but is "
                         f"{implementation!r}.")
    if is_offloaded(implementation) and device.type == "cpu":
        plain = "static" if implementation in STATIC else "dynamic"
        raise NotImplementedError(
            f"cache_implementation={implementation!r} keeps the cache in CPU memory and moves each layer to the "
            f"accelerator when it runs; the model is on the CPU, where there is nothing to offload (model.generate "
            f"fails there too: 'Torch not compiled with CUDA enabled'). Use cache_implementation={plain!r}.")
    if implementation == "quantized":
        backend = (cache_config or {}).get("backend", "quanto")
        if backend not in QUANTIZED_BACKENDS:
            raise ValueError(f"cache_config['backend'] must be one of {tuple(QUANTIZED_BACKENDS)} for the quantized "
                             f"cache, but is {backend!r}.")
        needs = QUANTIZED_BACKENDS[backend]
        if needs is not None and not _installed(needs[0]):
            raise NotImplementedError(
                f"cache_implementation='quantized' with the {backend!r} backend needs the {needs[1]!r} package, "
                f"which is not installed: `pip install {needs[1]}`, or pass cache_config={{'backend': 'fp8'}} "
                "(8-bit floats, torch alone).")


def _installed(module: str) -> bool:
    """Whether ``module`` (dotted, such as ``optimum.quanto``) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:      # its parent package is missing
        return False


def static_cache_length(model: Any, max_length: int, max_cache_len: Optional[int]) -> int:
    """The positions a new static cache holds: ``max_length - 1`` (the last token is never fed), or
    ``max_cache_len`` if larger, and never fewer than the model's previous static cache had.

    The reference keeps the last size on the model (``_previous_max_cache_length``) so that a later
    call reuses the shape (no recompilation); this function reads and updates the same attribute,
    so calls of both libraries in any order build caches of the same size (the same bits).
    """
    length = max(max_length - 1, max_cache_len or 0)
    length = max(length, getattr(model, "_previous_max_cache_length", -1))
    model._previous_max_cache_length = length
    return length


def build_cache(model: Any, implementation: Optional[str], max_length: int, cache_config: Any = None,
                max_cache_len: Optional[int] = None) -> Any:
    """A new, empty cache for one call.

    Args:
        model: the causal LM; its decoder text config decides the layer types (full, sliding window).
        implementation: a name of :data:`IMPLEMENTATIONS` or None (checked by :func:`check_cache_request`).
        max_length: the call's absolute length limit (a static cache holds ``max_length - 1`` positions).
        cache_config: for ``"quantized"``: ``backend`` (``"quanto"``, ``"hqq"``, ``"fp8"``) and the
            ``QuantizedCache`` options (``nbits``, ``q_group_size``, ``residual_length``, ...).
        max_cache_len: a static cache's minimum size (to keep one shape across calls of different lengths).
    """
    from transformers import DynamicCache, QuantizedCache, StaticCache   # the cache classes (not generation code)

    config = model.config.get_text_config(decoder=True)
    implementation = normalized(implementation)
    if implementation in STATIC:
        return StaticCache(config=config, max_cache_len=static_cache_length(model, max_length, max_cache_len),
                           offloading=is_offloaded(implementation))
    if implementation == "quantized":
        options = copy.deepcopy(cache_config) if cache_config else {}   # the caller's dict is not consumed
        options.setdefault("config", config)
        return QuantizedCache(backend=options.pop("backend", "quanto"), **options)
    if implementation == "offloaded":
        return DynamicCache(config=config, offloading=True)
    return new_dynamic_cache(config)


def past_length(cache: Any) -> int:
    """How many positions ``cache`` already holds (0 for None or an empty cache)."""
    return 0 if cache is None else int(cache.get_seq_length())


def cache_rows(cache: Any) -> Optional[int]:
    """The batch size of the positions ``cache`` holds, or None while it holds none."""
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if getattr(layer, "is_initialized", False) and isinstance(keys, torch.Tensor) and keys.dim() == 4:
            return int(keys.shape[0])
    return None


def check_continuation(cache: Any, input_length: int, mask_length: int, rows: int, max_length: int) -> None:
    """Refuse a continuation the reference would get wrong or crash on, with what to pass instead.

    Args:
        cache: ``past_key_values`` (None: nothing to check).
        input_length / mask_length: the widths of ``input_ids`` and of the attention mask (given or inferred).
        rows: the rows the call runs (``batch * max(num_beams, num_return_sequences)``).
        max_length: the call's absolute length limit (counted on ``input_ids``).

    Raises:
        ValueError: the sequence is not longer than what the cache holds, the cache holds another
            number of rows, or a static cache is too small for the call.
    """
    past = past_length(cache)
    if not past:
        return
    if input_length == mask_length and input_length <= past:
        raise ValueError(
            f"past_key_values holds {past} positions and input_ids has {input_length}: pass the whole sequence "
            f"(longer than {past}: the cached positions plus the new tokens), or only the new tokens with the "
            f"attention_mask of the whole sequence ([batch, {past} + new]).")
    held = cache_rows(cache)
    if held is not None and held != rows:
        raise ValueError(
            f"past_key_values holds {held} rows but this call runs {rows} (batch x max(num_beams, "
            f"num_return_sequences)); with beams or several sequences per prompt, expand the cache first: "
            f"cache.batch_repeat_interleave({rows // held if held and rows % held == 0 else 'k'}).")
    full = [layer.get_max_length() for layer in getattr(cache, "layers", []) if not getattr(layer, "is_sliding", False)]
    needed = mask_length + max_length - input_length - 1     # the last token is never fed
    if is_static(cache) and full and 0 < min(full) < needed:
        raise ValueError(
            f"the static cache holds {min(full)} positions but this call needs {needed} (the {past} cached, the "
            f"new input and the tokens to generate but the last): generate fewer tokens, or build the first "
            f"call's cache larger (max_cache_len={needed} or more).")


def is_static(cache: Any) -> bool:
    """True for a fixed-shape cache (``StaticCache`` and other compileable ones)."""
    return bool(getattr(cache, "is_compileable", False))


def prepared_mask(model: Any, cache: Any, attention_mask: Optional[torch.Tensor], position_ids: torch.Tensor,
                  query_length: int, first: bool) -> Any:
    """The attention mask a forward on a static cache gets, built as the reference builds it.

    The reference turns the 2-D mask (or None when it is all ones) into the model's 4-D mask(s)
    before the forward when the cache is compileable: ``[rows, 1, query_length, cache_length]``
    (or a dict of them, one per layer type), the same shape at every decode step.

    Args:
        attention_mask: ``[rows, length]`` 0/1, or None (all ones).
        position_ids: ``[rows, query_length]`` int64, the positions fed.
        query_length: tokens fed per row in this forward.
        first: whether this is the call's first forward (the prefill).
    """
    from transformers.masking_utils import create_masks_for_generate

    build = getattr(model, "create_masks_for_generate", create_masks_for_generate)
    rows = position_ids.shape[0]
    mask = build(config=model.config,
                 inputs_embeds=torch.empty((rows, query_length, 0), dtype=model.dtype, device=position_ids.device),
                 attention_mask=attention_mask, past_key_values=cache, position_ids=position_ids,
                 block_sequence_ids=None, token_type_ids=None, mm_token_type_ids=None, is_first_iteration=first)
    if isinstance(mask, dict):
        return {k: v.contiguous() if v is not None else None for k, v in mask.items()}
    return mask.contiguous() if mask is not None else None
