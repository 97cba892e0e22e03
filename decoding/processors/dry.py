"""DRY, "Don't Repeat Yourself": penalise the token that would extend a repeat of the context.

By p-e-w (text-generation-webui PR #5677, 2024); the definition implemented is llama.cpp's ``dry``
sampler (``llama_sampler_dry`` in ``src/llama-sampling.cpp``, options ``--dry-multiplier``,
``--dry-base``, ``--dry-allowed-length``, ``--dry-penalty-last-n``, ``--dry-sequence-breaker``).
"""

from __future__ import annotations

import math
import numbers
import weakref
from typing import Any, Iterable, Optional, Sequence

import torch

from ..declarations import BEYOND, PENALTY, Knob, Sampler
from .base import LogitsProcessor

# log(float32 max): base ** exponent is clamped below this, as llama.cpp does, so it never overflows.
_FLOAT_MAX_LOG = 88.7228391


class DRYLogitsProcessor(LogitsProcessor):
    """``scores[v] -= multiplier * base ** (n_v - allowed_length)`` for every ``v`` with ``n_v >= allowed_length``.

    ``n_v`` is the length of the longest suffix of the row's context that already occurred earlier
    in the context followed by ``v``: emitting ``v`` would extend that repeat to ``n_v + 1`` tokens.
    The context is the last ``dry_penalty_last_n`` tokens of the row (prompt included, left padding
    excluded; ``-1`` means all of it). A repeat never spans a sequence breaker: the suffix is at most
    as long as the run of tokens after the row's last breaker, and a breaker token itself is never
    penalised. The exponent is clamped so that ``base ** exponent`` stays finite in float32.

    Per step this costs one comparison of the context against itself per token of the longest
    repeat found (stopping early), plus one host sync to read that bound.

    Sequence breakers are token ids; a string breaker (with ``tokenizer=``) is every token whose text
    contains it, as in llama.cpp. Difference from llama.cpp: its multi-token breakers (a token ending
    in the start of the string, followed by the rest) are not matched.

    Args:
        dry_multiplier: ``multiplier``, a finite number > 0.
        dry_base: ``base``, a finite number >= 1 (llama.cpp default 1.75).
        dry_allowed_length: ``allowed_length``, an int >= 1 (llama.cpp default 2).
        dry_sequence_breakers: token ids that end a repeat (default: none).
        dry_penalty_last_n: how many trailing tokens to look at; -1 for all (llama.cpp default).
        padding_lengths: ``[rows]`` int64 left-padding length of each row, or None without padding.
    """

    name = "dry_multiplier"
    position_dependent = True      # reads where each row's padding ends, and the whole context

    def __init__(self, dry_multiplier: float, dry_base: float = 1.75, dry_allowed_length: int = 2,
                 dry_sequence_breakers: Iterable[int] = (), dry_penalty_last_n: int = -1,
                 padding_lengths: Optional[torch.Tensor] = None):
        check_dry(dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n)
        self.dry_multiplier = float(dry_multiplier)
        self.dry_base = float(dry_base)
        self.dry_allowed_length = int(dry_allowed_length)
        self.dry_sequence_breakers = sorted({int(t) for t in dry_sequence_breakers})
        self.dry_penalty_last_n = int(dry_penalty_last_n)
        self.padding_lengths = padding_lengths
        self._max_exponent = int(_FLOAT_MAX_LOG / math.log(self.dry_base)) if self.dry_base > 1.000001 else None

    def repeat_lengths(self, input_ids: torch.LongTensor, vocab: int) -> torch.LongTensor:
        """``n_v`` per row and token, ``[rows, vocab]`` int64 (0 where ``v`` extends no repeat)."""
        rows, length = input_ids.shape
        width = length if self.dry_penalty_last_n < 0 else min(self.dry_penalty_last_n, length)
        lengths = torch.zeros(rows, vocab, dtype=torch.long, device=input_ids.device)
        if width < 2:
            return lengths
        ids = input_ids[:, length - width:]                                     # [rows, width]
        positions = torch.arange(width, device=ids.device)
        valid = torch.ones_like(ids, dtype=torch.bool)
        if self.padding_lengths is not None:
            start = (self.padding_lengths.to(ids.device) - (length - width)).clamp(min=0)
            valid = positions[None, :] >= start[:, None]
        breakers = torch.tensor(self.dry_sequence_breakers, dtype=torch.long, device=ids.device)
        stop = ~valid | torch.isin(ids, breakers)                               # breakers and padding
        # the suffix may only use the tokens after the last breaker (or padding) of the row
        limit = width - 1 - torch.where(stop, positions, -1).amax(dim=1)       # [rows]
        # match[r, j]: length of the common suffix of ids[r, :j+1] and ids[r, :], for j < width - 1
        match = torch.zeros(rows, width - 1, dtype=torch.long, device=ids.device)
        alive = torch.ones(rows, width - 1, dtype=torch.bool, device=ids.device)
        for k in range(int(limit.max())):
            earlier = torch.full((rows, width - 1), -1, dtype=torch.long, device=ids.device)
            earlier_ok = torch.zeros(rows, width - 1, dtype=torch.bool, device=ids.device)
            earlier[:, k:] = ids[:, :width - 1 - k]                           # token at j - k
            earlier_ok[:, k:] = valid[:, :width - 1 - k]
            alive &= earlier_ok & (earlier == ids[:, width - 1 - k, None]) & (k < limit)[:, None]
            if not bool(alive.any()):
                break
            match += alive.long()
        repeated = torch.where(match >= self.dry_allowed_length, match, 0)
        return lengths.scatter_reduce_(1, ids[:, 1:], repeated, reduce="amax")  # token after each j

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lengths = self.repeat_lengths(input_ids, scores.shape[-1])
        exponent = (lengths - self.dry_allowed_length).clamp(min=0)
        if self._max_exponent is not None:
            exponent = exponent.clamp(max=self._max_exponent)
        penalty = self.dry_multiplier * torch.pow(self.dry_base, exponent.to(scores.dtype))
        penalty = penalty.masked_fill(lengths < self.dry_allowed_length, 0.0)
        breakers = [t for t in self.dry_sequence_breakers if t < scores.shape[-1]]
        if breakers:
            penalty[:, breakers] = 0.0
        return scores - penalty


def check_dry(dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n) -> None:
    """``dry_multiplier`` > 0, ``dry_base`` >= 1, ``dry_allowed_length`` int >= 1, ``dry_penalty_last_n`` int >= -1, != 0."""
    def real(value: Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

    def integer(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not real(dry_multiplier) or dry_multiplier <= 0:
        raise ValueError(f"`dry_multiplier` must be a finite number > 0 (None disables DRY), but is {dry_multiplier!r}.")
    if not real(dry_base) or dry_base < 1:
        raise ValueError(f"`dry_base` must be a finite number >= 1, but is {dry_base!r}.")
    if not integer(dry_allowed_length) or dry_allowed_length < 1:
        raise ValueError(f"`dry_allowed_length` must be an integer >= 1, but is {dry_allowed_length!r}.")
    if not integer(dry_penalty_last_n) or dry_penalty_last_n < -1 or dry_penalty_last_n == 0:
        raise ValueError(f"`dry_penalty_last_n` must be an integer >= 1, or -1 for the whole context, but is "
                         f"{dry_penalty_last_n!r}.")


def check_breakers(breakers: Any) -> None:
    """``dry_sequence_breakers``: a list whose entries are token ids (ints >= 0) or strings."""
    if not isinstance(breakers, (list, tuple, set, frozenset)):
        raise ValueError(f"`dry_sequence_breakers` must be a list of token ids or strings, but is {breakers!r}.")
    for breaker in breakers:
        if not (isinstance(breaker, str) or (isinstance(breaker, numbers.Integral) and not isinstance(breaker, bool)
                                             and breaker >= 0)):
            raise ValueError(f"`dry_sequence_breakers` entries must be token ids (ints >= 0) or strings, but one "
                             f"is {breaker!r}.")


def breaker_token_ids(breakers: Optional[Sequence[Any]], tokenizer: Any = None) -> list[int]:
    """Token ids of ``dry_sequence_breakers``: ints as they are; a string becomes every token whose text
    contains it (llama.cpp's ``get_overlapping_token_sequences``: with the default breakers ``"\\n"``,
    ``":"``, ``'"'``, ``"*"``, a token like ``".\\n"`` breaks a repeat too).

    Raises:
        ValueError: an entry is neither a token id nor a string, a string is given without a
            tokenizer, or no single token contains a string (a breaker spanning several tokens;
            llama.cpp's multi-token "head and tail" sequences are not supported).
    """
    if breakers is None:
        return []
    check_breakers(breakers)
    ids: set[int] = set()
    texts: Optional[list[str]] = None
    for breaker in breakers:
        if not isinstance(breaker, str):
            ids.add(int(breaker))
            continue
        if tokenizer is None:
            raise ValueError(f"`dry_sequence_breakers` entry {breaker!r} is a string: pass `tokenizer=` to "
                             "find its tokens, or give token ids.")
        if not breaker:
            raise ValueError("`dry_sequence_breakers` has an empty string; give non-empty texts or token ids.")
        texts = texts if texts is not None else token_texts(tokenizer)
        found = [token for token, text in enumerate(texts) if breaker in text]
        if not found:
            raise ValueError(f"`dry_sequence_breakers` entry {breaker!r}: no single token contains it (it encodes "
                             f"to {tokenizer.encode(breaker, add_special_tokens=False)}); breakers spanning "
                             "several tokens are not supported, give a shorter text or token ids.")
        ids.update(found)
    return sorted(ids)


_TEXTS_CACHE: "weakref.WeakKeyDictionary[Any, list[str]]" = weakref.WeakKeyDictionary()


def token_texts(tokenizer: Any) -> list[str]:
    """The decoded text of every token id (``len(tokenizer)`` entries), computed once per tokenizer."""
    try:
        return _TEXTS_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    try:
        _TEXTS_CACHE[tokenizer] = texts
    except TypeError:   # a tokenizer that cannot be weakly referenced: no caching
        pass
    return texts


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.


def _check_one(name, value) -> None:
    """Check one DRY knob with the others at their defaults, so the rule that fails is its own."""
    values = {knob.name: knob.companion for knob in (DRY_BASE, DRY_ALLOWED_LENGTH, DRY_PENALTY_LAST_N)}
    values["dry_multiplier"] = 1.0
    # 0 turns DRY off, as None does (a number test first: a tensor's == gives a tensor, not a bool)
    if name == "dry_multiplier" and isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0:
        return
    values[name] = value
    check_dry(**values)


DRY_BASE = Knob("dry_base", BEYOND, "DRY: the base of the exponential penalty", type=float, companion=1.75,
                check=_check_one, values=">= 1")
DRY_ALLOWED_LENGTH = Knob("dry_allowed_length", BEYOND, "DRY: repeats up to this length are not penalised",
                          type=int, companion=2, check=_check_one, values="int >= 1")
DRY_PENALTY_LAST_N = Knob("dry_penalty_last_n", BEYOND, "DRY: how many trailing tokens to search (-1: all)",
                          type=int, companion=-1, check=_check_one, values="int >= 1 or -1")
DRY_SEQUENCE_BREAKERS = Knob("dry_sequence_breakers", BEYOND, "DRY: tokens (ids, or texts with tokenizer=) that "
                             "end a repeat", check=lambda name, v: check_breakers(v), values="ids or strings")


def _build(settings, context):
    if settings.dry_multiplier is None or settings.dry_multiplier == 0:
        return None
    return DRYLogitsProcessor(settings.dry_multiplier, DRY_BASE.read(settings), DRY_ALLOWED_LENGTH.read(settings),
                              breaker_token_ids(settings.dry_sequence_breakers, context.tokenizer),
                              DRY_PENALTY_LAST_N.read(settings), padding_lengths=context.padding_lengths)


DRY = Sampler(
    DRYLogitsProcessor, stage=PENALTY, build=_build,
    knobs=(Knob("dry_multiplier", BEYOND, "DRY: penalise the token that would extend a repeat of the context",
                type=float, check=_check_one, values="> 0"),
           DRY_BASE, DRY_ALLOWED_LENGTH, DRY_SEQUENCE_BREAKERS, DRY_PENALTY_LAST_N),
    places={"llama.cpp": "after presence_penalty"})
