"""The model runner: prefill, then one decode step at a time, through ``model.forward`` and a KV cache.

It sends exactly what the reference sends (``../shared/hf_generate.md`` sections 0 and 6):

- prefill: the whole left-padded prompt, ``position_ids = cumsum(mask) - 1`` with pads at 0;
- each step: one token per row, ``position_ids = last + 1``, the mask grown by a column of ones
  (finished rows included);
- the attention mask is never passed when the prompt mask is all ones;
- ``logits_to_keep=1`` when ``model.forward`` accepts it; ``use_cache=True``; a ``DynamicCache``.

Logits come back as a float32 copy of the last position, ``[rows, vocab]``, on the device of the
caller's ``input_ids`` (where all bookkeeping runs, as in the reference).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from transformers import DynamicCache


def model_device(model: Any) -> torch.device:
    """The device the model's inputs go to (the first parameter's for a dispatched model)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


class ModelRunner:
    """Owns the KV cache, the attention mask and the position ids of one generation.

    Args:
        model: a ``transformers`` causal LM (anything whose forward takes ``input_ids``,
            ``attention_mask``, ``position_ids``, ``past_key_values``, ``use_cache``).
        attention_mask: ``[rows, prompt_len]`` 0/1 mask of the (expanded) prompt.
        max_length: the longest the sequences can get (sizes the mask buffer).
        use_cache: False re-feeds the whole sequence every step, as the reference does.
        output_device: where logits are returned (the device of ``input_ids``).
        output_attentions / output_hidden_states: ask the model for them; the latest forward's
            output stays in ``last_output``.
    """

    def __init__(self, model: Any, attention_mask: torch.Tensor, max_length: int,
                 use_cache: bool = True, output_device: Optional[torch.device] = None,
                 cache: Any = None, output_attentions: bool = False, output_hidden_states: bool = False):
        self.model = model
        self.use_cache = use_cache
        self.device = model_device(model)
        self.output_device = output_device or attention_mask.device
        rows, prompt_len = attention_mask.shape
        self.length = 0
        # The reference drops an all-ones mask (and never passes one afterwards).
        self.pass_mask = not bool((attention_mask == 1).all())
        self._mask = torch.ones(rows, max(max_length, prompt_len), dtype=attention_mask.dtype,
                                device=self.device)
        self._mask[:, :prompt_len] = attention_mask.to(self.device)
        self._prompt_positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0).to(self.device)
        self._last_position = self._prompt_positions[:, -1:]
        self._tokens: Optional[torch.Tensor] = None  # all tokens, only kept when use_cache=False
        forward = getattr(model, "forward", model)
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(forward).parameters else {}
        if output_attentions:
            self._extra["output_attentions"] = True
        if output_hidden_states:
            self._extra["output_hidden_states"] = True
        if cache is not None:
            self.cache = cache
        elif use_cache:
            config = model.config.get_text_config(decoder=True)
            self.cache = DynamicCache(config=config)
        else:
            self.cache = None

    @property
    def attention_mask(self) -> Optional[torch.Tensor]:
        """The mask the next forward sees, ``[rows, length]``, or None when it is all ones."""
        return self._mask[:, :self.length] if self.pass_mask else None

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, **extra: Any) -> torch.Tensor:
        kwargs = dict(self._extra)
        kwargs.update(extra)
        if self.use_cache:
            kwargs["past_key_values"] = self.cache
        mask = self.attention_mask
        if mask is not None:
            kwargs["attention_mask"] = mask
        out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=self.use_cache,
                         return_dict=True, **kwargs)
        self.last_output = out
        return out.logits[:, -1].to(copy=True, dtype=torch.float32, device=self.output_device)

    def prefill(self, input_ids: torch.LongTensor, **extra: Any) -> torch.FloatTensor:
        """Run the whole prompt. ``input_ids``: ``[rows, prompt_len]``; returns ``[rows, vocab]`` float32."""
        self.length = input_ids.shape[1]
        ids = input_ids.to(self.device)
        if not self.use_cache:
            self._tokens = ids
        return self._forward(ids, self._prompt_positions, **extra)

    def step(self, tokens: torch.LongTensor, **extra: Any) -> torch.FloatTensor:
        """Feed one token per row (``[rows]`` int64); returns the next ``[rows, vocab]`` float32 logits."""
        self.length += 1
        self._last_position = self._last_position + 1
        ids = tokens.to(self.device)[:, None]
        if self.use_cache:
            return self._forward(ids, self._last_position, **extra)
        self._tokens = torch.cat([self._tokens, ids], dim=-1)
        mask = self._mask[:, :self.length]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return self._forward(self._tokens, positions, **extra)

    def reorder(self, beam_rows: torch.Tensor) -> None:
        """Make row ``r`` continue the history of row ``beam_rows[r]`` (beam search).

        ``beam_rows``: ``[rows]`` int32 or int64. The KV cache is index-selected along its batch
        dimension (``cache.reorder_cache``, or the model's own ``_reorder_cache`` where it has one, as
        the reference does); without a cache, the token history is. The attention mask and the
        position ids are left as they are: they are per row and equal for the rows of one prompt,
        and beam search only moves rows within a prompt (``beam_rows[r]`` is always a row of the
        same prompt as ``r``).
        """
        if not self.use_cache:
            self._tokens = self._tokens.index_select(0, beam_rows.to(self.device))
        elif hasattr(self.model, "_reorder_cache"):
            self.cache = self.model._reorder_cache(self.cache, beam_rows.to(self.device))
        else:
            self.cache.reorder_cache(beam_rows)
