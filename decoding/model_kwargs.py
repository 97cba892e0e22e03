"""Model inputs passed through: what the caller gives ``model.forward`` besides ids, mask and cache.

``generate(model, ids, token_type_ids=..., position_ids=..., logits_to_keep=..., **other)`` passes
each keyword on as the reference passes it (transformers 5.23, ``GenerationMixin.generate`` and
``prepare_inputs_for_generation``):

- ``token_type_ids`` ``[batch, prompt_len]``: the whole prompt's at the prefill; then each new token
  gets its row's last type id, so the tensor grows by its last column every step;
- ``position_ids`` ``[batch, prompt_len]``: used for the prompt instead of the ones counted from the
  mask; each new token gets its row's last position plus one (the runner owns them);
- ``logits_to_keep``: sent instead of the default 1 (0 keeps every position's logits; the loop reads
  the last one either way);
- ``labels``: accepted and never sent, as the reference does;
- anything else ``model.forward`` accepts (its own parameters, or the model-agnostic keys of
  ``transformers.utils.TransformersKwargs``): sent unchanged to every forward.

Tensors are repeated row by row like the prompt (``b0, b0, b1, b1, ...``), as the reference expands
every tensor it is given. A keyword neither generation nor the model knows is refused by
:func:`split_model_kwargs`'s caller with the usual unknown-keyword error.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Optional

import torch

#: Keywords with a meaning of their own here; every other accepted one is sent unchanged.
GROWN = ("token_type_ids", "position_ids")
NEVER_SENT = ("labels",)


def forward_parameters(model: Any) -> set[str]:
    """The keywords ``model.forward`` takes by name, plus the model-agnostic ones transformers forwards to
    every model (``TransformersKwargs``) when ``forward`` takes ``**kwargs``."""
    forward = getattr(model, "forward", model)
    parameters = inspect.signature(forward).parameters
    names = {name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        try:
            from transformers.utils import TransformersKwargs
            names |= set(TransformersKwargs.__optional_keys__)
        except ImportError:  # pragma: no cover (an older transformers without the typed kwargs)
            pass
    return names - {"self", "input_ids", "attention_mask", "past_key_values", "cache", "inputs_embeds", "use_cache",
                    "return_dict"}


def split_model_kwargs(model: Any, kwargs: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """Take out of ``kwargs`` the model inputs: keywords that are not in ``known`` (generation's own
    keywords) and that ``model.forward`` accepts. What stays is generation's, or unknown to both."""
    known = set(known)
    accepted = forward_parameters(model)
    return {name: kwargs.pop(name) for name in list(kwargs) if name not in known and name in accepted}


def _rows(value: Any) -> Optional[int]:
    return value.shape[0] if isinstance(value, torch.Tensor) and value.dim() > 0 else None


class ModelKwargs:
    """The caller's model inputs for one generation, kept in step with the rows and the length.

    Args:
        values: keyword -> value, as :func:`split_model_kwargs` took them (prompt rows, not expanded).

    Attributes:
        token_type_ids: ``[rows, length]`` int64 or None; grows by its last column each new token.
        position_ids: ``[rows, prompt_len]`` (or ``[1, prompt_len]``) int64 or None: the prompt's positions.
        logits_to_keep: the caller's value, or None (the runner then sends 1 where the model takes it).
        inputs_embeds: ``[rows, embeds_len, hidden]`` float or None: the prompt as embeddings, fed by the
            prefill instead of the prompt ids (``ModelRunner.prefill``).
        static: sent unchanged to every forward.
    """

    def __init__(self, values: dict[str, Any]):
        values = dict(values)
        self.token_type_ids: Optional[torch.Tensor] = values.pop("token_type_ids", None)
        self.position_ids: Optional[torch.Tensor] = values.pop("position_ids", None)
        self.logits_to_keep = values.pop("logits_to_keep", None)
        self.inputs_embeds: Optional[torch.Tensor] = values.pop("inputs_embeds", None)
        for name in NEVER_SENT:
            values.pop(name, None)
        self.static = {name: value for name, value in values.items() if value is not None}

    def __bool__(self) -> bool:
        return (self.token_type_ids is not None or self.position_ids is not None or self.logits_to_keep is not None
                or self.inputs_embeds is not None or bool(self.static))

    def check(self, input_ids: torch.Tensor) -> None:
        """``token_type_ids`` and ``position_ids`` must be ``[batch, prompt_len]`` (``position_ids`` may have
        one row for all), as the prompt ``input_ids``; else a ValueError saying which."""
        batch, length = input_ids.shape
        for name, value in (("token_type_ids", self.token_type_ids), ("position_ids", self.position_ids)):
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point or value.dim() != 2:
                raise ValueError(f"`{name}` must be an integer tensor [batch, prompt_len] like input_ids, got "
                                 f"{getattr(value, 'shape', type(value).__name__)!s}.")
            rows_ok = value.shape[0] == batch or (name == "position_ids" and value.shape[0] == 1)
            if not rows_ok or value.shape[1] != length:
                raise ValueError(f"`{name}` has shape {tuple(value.shape)} but input_ids has shape "
                                 f"{(batch, length)}; give one value per prompt token.")

    def expand(self, times: int) -> "ModelKwargs":
        """Each tensor's rows repeated ``times`` times in place (``b0, b0, b1, b1, ...``), as the prompt is."""
        if times == 1:
            return self

        def repeat(value: Any) -> Any:
            return value.repeat_interleave(times, dim=0) if isinstance(value, torch.Tensor) else value

        twin = ModelKwargs({name: repeat(value) for name, value in self.static.items()})
        twin.token_type_ids = repeat(self.token_type_ids)
        twin.position_ids = repeat(self.position_ids)
        twin.inputs_embeds = repeat(self.inputs_embeds)
        twin.logits_to_keep = self.logits_to_keep
        return twin

    # --- what each forward gets ------------------------------------------------------------------

    def for_forward(self, length: int, fed: int) -> dict[str, Any]:
        """The keywords of a forward that feeds the last ``fed`` of ``length`` positions.

        ``token_type_ids`` is grown to ``length`` (new positions repeat the row's last type id) and
        sliced to the ``fed`` positions. Returned tensors are on the caller's device; the runner moves them.
        """
        out = dict(self.static)
        if self.token_type_ids is not None:
            have = self.token_type_ids.shape[-1]
            if length > have:
                tail = self.token_type_ids[:, -1:].expand(-1, length - have)
                self.token_type_ids = torch.cat([self.token_type_ids, tail], dim=-1)
            out["token_type_ids"] = self.token_type_ids[:, length - fed:length].contiguous()
        return out

    # --- row operations (the runner calls them beside its own) -----------------------------------

    def select(self, rows: torch.Tensor, count: int) -> None:
        """Keep rows ``rows`` (``[k]`` int64), in that order, of every tensor with one row per generation
        row (``count`` of them before the selection)."""
        if self.token_type_ids is not None:
            self.token_type_ids = self.token_type_ids.index_select(0, rows.to(self.token_type_ids.device))
        for name, value in self.static.items():
            if _rows(value) == count:
                self.static[name] = value.index_select(0, rows.to(value.device))

    def crop(self, length: int) -> None:
        """Forget token types past ``length`` (positions are the runner's)."""
        if self.token_type_ids is not None:
            self.token_type_ids = self.token_type_ids[:, :length]

    def copy(self) -> "ModelKwargs":
        twin = ModelKwargs({})
        twin.__dict__.update(self.__dict__)
        twin.static = dict(self.static)
        return twin
