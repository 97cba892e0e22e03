"""The model runner: prefill, then one decode step at a time, through ``model.forward`` and a KV cache.

It sends exactly what the reference sends:

- prefill: the whole left-padded prompt, ``position_ids = cumsum(mask) - 1`` with pads at 0;
- each step: one token per row, ``position_ids = last + 1``, the mask grown by a column of ones
  (finished rows included);
- the attention mask is never passed when the prompt mask is all ones;
- ``logits_to_keep=1`` when ``model.forward`` accepts it; ``use_cache=True``; a ``DynamicCache``, or
  the cache it is given (:mod:`decoding.caches`): a static cache's forwards get the 4-D mask the
  reference builds for them, and a cache that already holds positions is continued (the prefill
  feeds only what it lacks).

Logits come back as a float32 copy of the last position, ``[rows, vocab]``, on the device of the
caller's ``input_ids`` (where all bookkeeping runs, as in the reference).

Between forwards, four row operations keep the cache, the mask, the positions (and, without a
cache, the token history) consistent with each other: :meth:`ModelRunner.select` (keep or reorder
rows; beam search's :meth:`~ModelRunner.reorder` is one case), :meth:`~ModelRunner.repeat` (each row
``k`` times, so one prefill serves ``k`` branches), :meth:`~ModelRunner.fork` (an independent copy)
and :meth:`~ModelRunner.crop` (forget the last ``n`` positions).

Buffers that follow the generation's length start at what the prompt needs and double when full
(:func:`widened`), so a huge ``max_length`` that is never reached costs nothing.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Optional

import torch

from .model_kwargs import ModelKwargs
from .caches import is_static, past_length, prepared_mask
from .compiled import PADDING_MASK, mask_in_graph
from .errors import NonFiniteLogitsError, all_finite, non_finite
from .versions import CACHE_KEYWORD, new_dynamic_cache


def check_finite_logits(logits: torch.Tensor, step: int, who: str = "the model") -> None:
    """Raise :class:`~decoding.errors.NonFiniteLogitsError` where a row holds NaN or +inf, or only -inf.

    ``logits``: ``[rows, vocab]`` or ``[rows, positions, vocab]``; ``step``: the forward's number (0:
    the prompt's). -inf alone is left alone (a model may mask tokens that way).
    """
    if all_finite(logits):
        return
    bad = non_finite(logits.reshape(logits.shape[0], -1, logits.shape[-1])).any(-1)      # [rows]
    rows = bad.nonzero().flatten().tolist()
    raise NonFiniteLogitsError(
        f"{who} returned non-finite logits (NaN, +inf or a row of only -inf) at step {step} (0: the prompt's "
        f"forward) in rows {rows}; the sequences so far are in .partial. Usual causes: float16 overflow (load "
        "the model in bfloat16 or float32), a broken checkpoint or quantization; remove_invalid_values=True "
        "replaces them and goes on, as model.generate does.", step=step, rows=rows)


def model_device(model: Any) -> torch.device:
    """The device the model's inputs go to (the first parameter's for a dispatched model)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def widened(buffer: torch.Tensor, needed: int, limit: int, fill: Any) -> torch.Tensor:
    """``buffer`` itself when its last dimension holds ``needed`` columns, else a wider copy.

    The copy is twice as wide (amortised O(1) per appended column), capped at ``limit`` (the
    ``max_length`` the buffer can reach) but never narrower than ``needed``; new columns hold ``fill``.
    """
    width = buffer.shape[-1]
    if needed <= width:
        return buffer
    grown = buffer.new_full((*buffer.shape[:-1], max(needed, min(2 * width, limit))), fill)
    grown[..., :width] = buffer
    return grown


def _fresh(value: Any) -> Any:
    """A tensor (or each tensor of a dict) with the standard contiguous strides, also along its size-1
    dimensions; anything else as it is."""
    if isinstance(value, dict):
        return {key: _fresh(item) for key, item in value.items()}
    return value.clone(memory_format=torch.contiguous_format) if isinstance(value, torch.Tensor) else value


class ModelRunner:
    """Owns the KV cache, the attention mask and the position ids of one generation.

    Args:
        model: a ``transformers`` causal LM (anything whose forward takes ``input_ids``,
            ``attention_mask``, ``position_ids``, ``past_key_values``, ``use_cache``).
        attention_mask: ``[rows, prompt_len]`` 0/1 mask of the (expanded) prompt.
        max_length: the longest the sequences are expected to get; the mask buffer starts at the
            prompt's width and doubles up to it (stepping past it still works).
        use_cache: False re-feeds the whole sequence every step, as the reference does.
        output_device: where logits are returned (the device of ``input_ids``).
        cache: a cache to use instead of a new ``DynamicCache``. If it already holds ``P`` positions, the
            prefill continues it: ``attention_mask`` then covers the whole sequence (the cached
            positions too), and :meth:`prefill` is given either the whole sequence or only the new tokens.
        output_attentions / output_hidden_states: ask the model for them; the latest forward's
            output stays in ``last_output`` until the rows move (:meth:`select`, :meth:`reorder`) or the
            next forward starts (None from then on: it is not kept alive through either).
        croppable: keep the whole history of sliding-window layers until the next :meth:`crop`, so
            that :meth:`crop` works once a row is longer than the window (costs that memory).
        model_kwargs: the caller's model inputs (``token_type_ids``, ``position_ids``, ``logits_to_keep``,
            ...; rows expanded like the mask), passed as the reference passes them (:mod:`decoding.model_kwargs`).
        check_finite: raise :class:`~decoding.errors.NonFiniteLogitsError` on NaN / +inf logits
            (see :func:`check_finite_logits`); off with ``remove_invalid_values``.
        decode_forward: called instead of ``model`` for the forwards of one token per row after the
            prefill (the compiled step of :mod:`decoding.compiled`, on a static cache), or None.
    """

    def __init__(self, model: Any, attention_mask: torch.Tensor, max_length: int,
                 use_cache: bool = True, output_device: Optional[torch.device] = None,
                 cache: Any = None, output_attentions: bool = False, output_hidden_states: bool = False,
                 croppable: bool = False, model_kwargs: Optional[ModelKwargs] = None, check_finite: bool = True,
                 decode_forward: Optional[Callable[..., Any]] = None):
        self.model = model
        self.check_finite = check_finite
        self.decode_forward = decode_forward     # the compiled step (decoding/compiled.py), or None
        self.use_cache = use_cache
        self.device = model_device(model)
        self.output_device = output_device or attention_mask.device
        prompt_len = attention_mask.shape[1]
        self.max_length = max(max_length, prompt_len)
        self.prompt_length = prompt_len
        self.length = 0
        # reference quirk: an all-ones mask is never passed to the model (with SDPA it can change the last bits).
        self.pass_mask = not bool((attention_mask == 1).all())
        self._mask = attention_mask.to(self.device, copy=True)        # [rows, width >= length], grows
        self.inputs = model_kwargs.copy() if model_kwargs is not None else ModelKwargs({})
        self._given_positions = self.inputs.position_ids is not None   # the caller's: new ones are last + 1
        if self._given_positions:
            self._prompt_positions = self.inputs.position_ids.to(self.device).expand(attention_mask.shape[0], -1)
        else:
            self._prompt_positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0).to(self.device)
        self._last_position = self._prompt_positions[:, -1:]
        self._tokens: Optional[torch.Tensor] = None  # all tokens, only kept when use_cache=False
        self.last_output: Any = None                 # the latest forward's output (see output_attentions)
        forward = getattr(model, "forward", model)
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(forward).parameters else {}
        if self.inputs.logits_to_keep is not None:
            self._extra["logits_to_keep"] = self.inputs.logits_to_keep
        if output_attentions:
            self._extra["output_attentions"] = True
        if output_hidden_states:
            self._extra["output_hidden_states"] = True
        if cache is not None:
            self.cache = cache
        elif use_cache:
            config = model.config.get_text_config(decoder=True)
            self.cache = new_dynamic_cache(config)
        else:
            self.cache = None
        self.past = past_length(self.cache)           # positions the cache held before this runner
        self.static = is_static(self.cache)           # fixed-shape cache: forwards get a prepared 4-D mask
        # a compiled step builds the 4-D mask itself from the 2-D one as wide as the cache (fixed shape)
        self._mask_width = mask_in_graph(self.cache) if decode_forward is not None else None
        if self._mask_width is not None:
            self._mask = widened(self._mask, self._mask_width, self._mask_width, 1)
        if croppable and self.cache is not None and hasattr(self.cache, "activate_past_recording"):
            self.cache.activate_past_recording()

    @property
    def rows(self) -> int:
        return self._mask.shape[0]

    @property
    def attention_mask(self) -> Optional[torch.Tensor]:
        """The mask the next forward sees, ``[rows, length]``, or None when it is all ones."""
        return self._mask[:, :self.length] if self.pass_mask else None

    @torch.no_grad()
    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, first: bool = False,
                 **extra: Any) -> torch.Tensor:
        """One forward; no autograd graph is recorded (decoding never needs gradients)."""
        kwargs = dict(self._extra)
        fed = input_ids.shape[1] if input_ids is not None else extra["inputs_embeds"].shape[1]
        if self.inputs:
            kwargs.update({name: value.to(self.device) if isinstance(value, torch.Tensor) else value
                           for name, value in self.inputs.for_forward(self.length, fed).items()})
        kwargs.update(extra)
        if self.use_cache:
            kwargs[CACHE_KEYWORD] = self.cache
        compiled = self.decode_forward is not None and not first and input_ids is not None and input_ids.shape[1] == 1
        if compiled and self._mask_width is not None and self._mask.shape[1] == self._mask_width:
            # the whole-width 2-D mask: columns past the position are masked by causality whatever they hold
            kwargs[PADDING_MASK] = self._mask if self.pass_mask else None
        else:
            mask = self.attention_mask
            if self.static:
                mask = prepared_mask(self.model, self.cache, mask, position_ids, fed, first)
            if mask is not None:
                kwargs["attention_mask"] = mask
        forward = self.model
        if compiled:
            # the compiled step guards on exact strides: give it freshly laid out tensors (no recompiles)
            forward, input_ids, position_ids = self.decode_forward, _fresh(input_ids), _fresh(position_ids)
            kwargs = {name: _fresh(value) for name, value in kwargs.items()}
        self.last_output = None      # the previous output (its logits) is not kept alive through this forward
        out = forward(input_ids=input_ids, position_ids=position_ids, use_cache=self.use_cache,
                         return_dict=True, **kwargs)
        self.last_output = out
        logits = out.logits[:, -1].to(copy=True, dtype=torch.float32, device=self.output_device)
        if self.check_finite:
            check_finite_logits(logits, self.length - self.prompt_length)
        return logits

    def prefill(self, input_ids: torch.LongTensor, **extra: Any) -> torch.FloatTensor:
        """Run the prompt. ``input_ids``: ``[rows, n]``; returns ``[rows, vocab]`` float32.

        ``n`` is the mask's width, or, when the cache already holds ``P`` positions, either that (the
        whole sequence: ``input_ids[:, P:]`` is fed, as the reference does) or fewer (only the new
        tokens, all fed, at the last ``n`` positions of the mask). With ``inputs_embeds`` among the model
        inputs, those are fed instead (the ids may then be shorter, even empty), as the reference does;
        the mask and positions are the embeddings'.
        """
        self.length = self.prompt_length
        embeds = self.inputs.inputs_embeds
        if embeds is not None:     # the whole sequence's embeddings: those past the cached positions are fed
            return self._forward(None, self._prompt_positions[:, self.past:], first=True,
                                 inputs_embeds=embeds[:, self.past:].to(self.device), **extra)
        ids = input_ids.to(self.device)
        if self.past and ids.shape[1] == self.prompt_length:
            ids = ids[:, self.past:]
        if not self.use_cache:
            self._tokens = ids
        positions = self._prompt_positions[:, self.prompt_length - ids.shape[1]:]
        return self._forward(ids, positions, first=True, **extra)

    def step(self, tokens: torch.LongTensor, **extra: Any) -> torch.FloatTensor:
        """Feed one token per row (``[rows]`` int64); returns the next ``[rows, vocab]`` float32 logits."""
        self.length += 1
        self._mask = widened(self._mask, self.length, self.max_length, 1)
        self._last_position = self._last_position + 1
        ids = tokens.to(self.device)[:, None]
        if self.use_cache:
            return self._forward(ids, self._last_position, **extra)
        self._tokens = torch.cat([self._tokens, ids], dim=-1)
        mask = self._mask[:, :self.length]
        if self._given_positions:
            new = torch.arange(1, self.length - self.prompt_length + 1, device=self.device)
            positions = torch.cat([self._prompt_positions, self._prompt_positions[:, -1:] + new], dim=-1)
        else:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return self._forward(self._tokens, positions, **extra)

    # -----------------------------------------------------------------------------------------
    # Row operations. Each keeps cache, mask, positions and (without a cache) tokens in step.
    # -----------------------------------------------------------------------------------------

    def select(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` (``[k]`` int32 or int64), in that order: new row ``i`` continues old
        row ``rows[i]``. ``k`` may differ from the current row count, and a row may appear twice.
        The cache (or, without one, the token history), the mask and the positions all follow.
        """
        rows = rows.to(device=self.device, dtype=torch.long)
        self.last_output = None      # its rows are the old ones (and, freed now, it is not held through the move)
        self.inputs.select(rows, self.rows)
        self._select_history(rows)
        self._mask = self._mask.index_select(0, rows)
        self._prompt_positions = self._prompt_positions.index_select(0, rows)
        self._last_position = self._last_position.index_select(0, rows)

    def reorder(self, beam_rows: torch.Tensor) -> None:
        """Make row ``r`` continue the history of row ``beam_rows[r]`` (beam search, every step).

        ``beam_rows``: ``[rows]`` int32 or int64. Only the cache (or the token history) moves: the mask
        and the positions are per row and equal for the rows of one prompt, and beam search only moves
        rows within a prompt, so :meth:`select`'s three other copies would change nothing.
        """
        self.last_output = None      # freed before the cache is copied, as the reference deletes its outputs
        self._select_history(beam_rows.to(self.device))

    def _select_history(self, rows: torch.Tensor) -> None:
        """The cache goes through the model's own ``_reorder_cache`` where it has one (as the reference
        does in beam search), else ``cache.reorder_cache``: an ``index_select`` along the batch that
        every transformers cache layer implements, quantized and linear-attention ones included
        (``batch_select_indices`` would move only part of their state)."""
        if self.use_cache:
            if hasattr(self.model, "_reorder_cache"):
                self.cache = self.model._reorder_cache(self.cache, rows)
            else:
                self.cache.reorder_cache(rows)
        elif self._tokens is not None:
            self._tokens = self._tokens.index_select(0, rows)

    def repeat(self, k: int) -> None:
        """Repeat each row ``k`` times in place: rows ``r0, r0, .., r1, r1, ..`` (like ``repeat_interleave``),
        so that one prefill serves ``k`` continuations of every prompt."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"repeat(k) needs an integer k >= 1, got {k!r}.")
        self.select(torch.arange(self.rows, device=self.device).repeat_interleave(k))

    def fork(self) -> "ModelRunner":
        """An independent copy: its own cache tensors, mask, positions and tokens, the same model.

        Stepping, selecting or cropping either one leaves the other as it was. The cache is copied
        whole (``copy.deepcopy``), so a fork costs one cache's memory.
        """
        twin = copy.copy(self)
        twin.cache = copy.deepcopy(self.cache)
        twin._extra = dict(self._extra)
        twin.inputs = self.inputs.copy()
        twin._mask = self._mask.clone()
        twin._prompt_positions = self._prompt_positions.clone()
        twin._last_position = self._last_position.clone()
        twin._tokens = self._tokens.clone() if self._tokens is not None else None
        return twin

    def crop(self, n: int) -> None:
        """Forget the last ``n`` positions of every row (``0 <= n < length``): the next :meth:`step`
        continues as if they had never been fed. The cache goes through ``cache.crop(-n)``.

        Sliding-window layers keep only their window; once a row is longer than the window they
        can be cropped only with ``croppable=True``, and then by at most the tokens fed since the
        previous crop (before the first crop, everything since the prefill is kept).
        """
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < self.length:
            raise ValueError(f"crop(n) needs an integer 0 <= n < {self.length} (the current length, after "
                             f"prefill; at least one position must stay), got {n!r}.")
        if n == 0:
            return
        if self.use_cache:
            self._check_sliding_crop(n)
            self.cache.crop(-n)
        elif self._tokens is not None:
            self._tokens = self._tokens[:, :self.length - n]
        old, self.length = self.length, self.length - n
        self.inputs.crop(self.length)
        # the dropped columns may be prompt columns (0 for padding); what is fed next is always real
        self._mask[:, self.length:old] = 1
        if self.length > self.prompt_length:
            self._last_position = self._last_position - n
        else:
            self._last_position = self._prompt_positions[:, self.length - 1:self.length]

    def _check_sliding_crop(self, n: int) -> None:
        """Refuse a crop that a sliding-window layer cannot undo (it has dropped the keys it would need)."""
        for layer in getattr(self.cache, "layers", []):
            window = getattr(layer, "sliding_window", None)
            if not getattr(layer, "is_sliding", False) or window is None or not getattr(layer, "is_initialized", False):
                continue
            seen, kept = layer.get_seq_length(), layer.keys.shape[-2]
            if seen < window:
                continue                             # the window was never full: nothing was dropped yet
            if not getattr(layer, "record_past", False):
                raise ValueError(
                    f"crop({n}): the model has sliding-window layers (window {window}) and the rows are longer "
                    "than the window, so the cache no longer holds what cropping needs. Create the runner "
                    "with croppable=True to keep it.")
            if kept - n < min(seen - n, window - 1):
                raise ValueError(
                    f"crop({n}): a sliding-window layer (window {window}) keeps only the tokens fed since the "
                    f"last crop plus its window: crop at most {kept - window + 1} token(s) here.")
