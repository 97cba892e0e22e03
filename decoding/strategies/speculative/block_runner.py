"""The block runner: feed several tokens per row in one forward, then keep only part of them.

Speculative decoding needs two things the one-token :class:`~decoding.runner.ModelRunner` does not
do: a forward over a *block* of ``k`` tokens per row (the target verifying its drafts, a draft
re-reading its last two tokens), and taking back the tail of that block when drafts are rejected.

Layout. The KV cache has one common number of *slots* for all rows. ``occupied [rows, slots]`` says
which slots hold a token of the row's sequence (the prompt's left padding counts as occupied, so
slot counts match the reference's ``cache.get_seq_length()`` at batch size 1); ``mask [rows, slots]``
is the attention mask (0 for padding and for *holes*). Positions are ``cumsum(mask) - 1``, as the
reference builds them for a left-padded prompt, so a hole does not advance a row's positions.

``truncate(lengths)`` keeps the first ``lengths[r]`` occupied slots of each row. The slots no row
needs are cut from the tail with ``cache.crop`` (the reference's call). With one row that is all
there is. With several rows, a row that kept fewer tokens than another is left with holes at its
tail, masked out. Holes would change what a sliding-window layer sees, so several rows with a
sliding-window model are refused (``has_sliding_layers``).

The forward is called as the reference calls it in assisted generation: ``input_ids``,
``position_ids``, ``past_key_values``, ``use_cache=True``, the attention mask only when it is not
all ones, ``logits_to_keep`` when ``forward`` accepts it.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from transformers import DynamicCache

from ...model_kwargs import ModelKwargs
from ...runner import check_finite_logits, model_device
from ...versions import CACHE_KEYWORD, new_dynamic_cache


def new_cache(model: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``model``'s (current) text config, ready to be cropped."""
    cache = new_dynamic_cache(model.config.get_text_config(decoder=True))
    if hasattr(cache, "activate_past_recording"):
        cache.activate_past_recording()  # sliding-window layers need it before they can be cropped
    return cache


def has_sliding_layers(cache: Any) -> bool:
    """True when some layer of ``cache`` keeps only a sliding window."""
    return any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", []))


class BlockRunner:
    """Owns one model's KV cache, slot mask and positions during speculative decoding.

    Args:
        model: a ``transformers`` causal LM.
        prompt_mask: ``[rows, prompt_len]`` 0/1 attention mask of the (left-padded) prompt. The prompt
            itself is fed by the first :meth:`forward` (possibly with more tokens after it).
        output_device: where logits are returned (the device of the caller's ``input_ids``).
        model_kwargs: the caller's model inputs (:mod:`decoding.model_kwargs`): ``token_type_ids`` (new tokens
            take the row's last type id) and the keywords sent unchanged; ``logits_to_keep`` is the runner's,
            as in the reference's assisted generation. Caller-given ``position_ids`` are not supported here.
    """

    def __init__(self, model: Any, prompt_mask: torch.Tensor, output_device: Optional[torch.device] = None,
                 model_kwargs: Optional[ModelKwargs] = None, check_finite: bool = True, who: str = "the model"):
        self.model = model
        self.check_finite = check_finite   # NonFiniteLogitsError on NaN / +inf logits (runner.check_finite_logits)
        self.who = who
        self.device = model_device(model)
        self.output_device = output_device or prompt_mask.device
        self.prompt_mask = prompt_mask.to(self.device).long()
        rows = prompt_mask.shape[0]
        self.mask = self.prompt_mask.new_zeros(rows, 0)              # [rows, slots] attention mask
        self.occupied = torch.zeros(rows, 0, dtype=torch.bool, device=self.device)
        # reference quirk: an all-ones prompt mask is dropped; once a hole appears the mask must be passed.
        self.pass_mask = not bool((self.prompt_mask == 1).all())
        forward = getattr(model, "forward", model)
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(forward).parameters
        self.cache = new_cache(model)
        self.forwards = 0
        self.inputs = model_kwargs.copy() if model_kwargs else None

    @property
    def slots(self) -> int:
        return self.mask.shape[1]

    def forward(self, tokens: torch.LongTensor, num_logits: int = 1, first: bool = False,
                attention_mask: Optional[torch.Tensor] = None) -> torch.FloatTensor:
        """Feed ``tokens`` ``[rows, k]`` after the cached slots; return the last ``num_logits`` logits.

        ``first=True`` means ``tokens`` starts with the whole prompt (its mask is the prompt mask,
        the rest ones). ``attention_mask`` ``[rows, slots + k]``, if given, is passed instead of the
        runner's own mask (positions still follow the runner's mask). Returns
        ``[rows, num_logits, vocab]`` float32 on ``output_device``.
        """
        rows, k = tokens.shape
        block_mask = torch.ones(rows, k, dtype=self.mask.dtype, device=self.device)
        if first:
            block_mask[:, :self.prompt_mask.shape[1]] = self.prompt_mask
        self.mask = torch.cat([self.mask, block_mask], dim=1)
        self.occupied = torch.cat([self.occupied, torch.ones(rows, k, dtype=torch.bool, device=self.device)], dim=1)
        positions = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)[:, -k:]
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        elif self.pass_mask:
            kwargs["attention_mask"] = self.mask
        if self.inputs is not None:   # every new slot has the row's last type id, holes included: no crop needed
            kwargs.update({name: value.to(self.device) if isinstance(value, torch.Tensor) else value
                           for name, value in self.inputs.for_forward(self.slots, k).items()})
        if self._takes_logits_to_keep:
            kwargs["logits_to_keep"] = num_logits
        out = self.model(input_ids=tokens.to(self.device), position_ids=positions, use_cache=True,
                         **{CACHE_KEYWORD: self.cache}, **kwargs)
        self.forwards += 1
        logits = out.logits[:, -num_logits:].to(dtype=torch.float32, device=self.output_device)
        if self.check_finite:
            check_finite_logits(logits, self.forwards - 1, self.who)
        return logits

    def verify(self, sequences: Any, drafts: torch.LongTensor) -> torch.FloatTensor:
        """The target's step of a round: one forward over each row's newest token followed by its drafts.

        The first round feeds the whole prompt instead of the newest token (nothing is cached yet).
        ``sequences``: the :class:`~.ragged.RaggedSequences`; ``drafts``: ``[rows, gamma]``. Returns the
        ``[rows, gamma + 1, vocab]`` float32 logits of the positions after the newest token and each draft.
        """
        if self.slots == 0:
            return self.forward(torch.cat([sequences.aligned(), drafts], dim=1), drafts.shape[1] + 1, first=True)
        return self.forward(torch.cat([sequences.last(1), drafts], dim=1), drafts.shape[1] + 1)

    def truncate(self, lengths: torch.LongTensor) -> None:
        """Keep the first ``lengths[r]`` occupied slots of row ``r`` (``[rows]`` int64); drop the rest.

        The common tail is cropped from the cache; what remains for a row beyond its length becomes
        a masked hole. ``crop`` is called even for 0 tokens, as the reference does (it trims
        sliding-window layers back to their window).
        """
        lengths = lengths.to(self.device)
        keep = self.occupied & (self.occupied.long().cumsum(-1) <= lengths[:, None])
        used = keep.any(0).nonzero()
        common = int(used[-1]) + 1 if used.numel() else 0
        self.cache.crop(-(self.slots - common))
        if common < self.slots:
            keep, self.mask = keep[:, :common], self.mask[:, :common]
        self.occupied = keep
        if not bool(keep.all()):
            self.mask = self.mask.masked_fill(~keep, 0)
            self.pass_mask = True
