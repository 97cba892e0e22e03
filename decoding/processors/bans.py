"""Bans and biases on particular tokens or token sequences.

- :class:`NoRepeatNGramLogitsProcessor` and :class:`EncoderNoRepeatNGramLogitsProcessor`: never
  complete an n-gram already present (in the sequence, or in the prompt);
- :class:`SequenceBiasLogitsProcessor` and :class:`NoBadWordsLogitsProcessor`: add a bias (``-inf``
  for bad words) to the last token of a sequence whenever the text so far ends with the rest of it;
- :class:`SuppressTokensLogitsProcessor` and :class:`SuppressTokensAtBeginLogitsProcessor`: ``-inf``
  on listed tokens, always or only at the first generated position;
- :class:`PrefixConstrainedLogitsProcessor`: only the tokens a user function allows.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Union

import torch

from .base import LogitsProcessor
from .tokens import id_tensor, is_token_id, vocab_mask


def _check_ngram_size(size: int, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
        raise ValueError(f"`{name}` has to be an integer > 0 (0 disables it in generate), but is {size!r}.")
    return int(size)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would repeat an n-gram of the sequence (Paulus et al., 2017, "A Deep
    Reinforced Model for Abstractive Summarization"; fairseq's ``--no-repeat-ngram-size``).

    With ``len >= n``: for every window ``ids[i : i + n]`` whose first ``n - 1`` tokens equal the last
    ``n - 1`` tokens of the row, ``scores[ids[i + n - 1]] = -inf``. The whole row counts: prompt and
    left pads included.

    Args:
        ngram_size: n, an integer > 0 (1 bans every token already present).
    """

    name = "no_repeat_ngram_size"
    position_dependent = True      # reads n-grams from the row's first column on

    def __init__(self, ngram_size: int):
        self.ngram_size = _check_ngram_size(ngram_size, "no_repeat_ngram_size")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n, length = self.ngram_size, input_ids.shape[-1]
        if length < n:
            return scores
        vocab = scores.shape[-1]
        windows = input_ids.unfold(1, n, 1)                            # [rows, length - n + 1, n]
        suffix = input_ids[:, length - n + 1:]                          # [rows, n - 1]
        repeats = (windows[..., :-1] == suffix[:, None, :]).all(-1)     # [rows, length - n + 1]
        # each matching window bans its last token; the others point at a dummy column `vocab`
        banned_ids = torch.where(repeats, windows[..., -1].clamp(max=vocab), vocab)
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, banned_ids, True)
        return scores.masked_fill(banned[:, :vocab], -math.inf)


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would complete an n-gram of the prompt (``encoder_no_repeat_ngram_size``).

    The prompt's n-grams are collected once per batch item; at each step the last ``n - 1`` tokens
    of a row select the banned continuations. ``generate`` applies it to decoder-only models too,
    with the prompt (left pads included) as the "encoder" input.

    Args:
        encoder_ngram_size: n, an integer > 0.
        encoder_input_ids: ``[batch, prompt_len]`` int64 (or ``[prompt_len]``).
    """

    name = "encoder_no_repeat_ngram_size"

    def __init__(self, encoder_ngram_size: int, encoder_input_ids: torch.LongTensor):
        self.ngram_size = _check_ngram_size(encoder_ngram_size, "encoder_no_repeat_ngram_size")
        if encoder_input_ids.dim() == 1:
            encoder_input_ids = encoder_input_ids[None]
        self.batch_size = encoder_input_ids.shape[0]
        n = self.ngram_size
        self.continuations: list[dict[tuple, list[int]]] = []
        for row in encoder_input_ids.tolist():
            table: dict[tuple, list[int]] = {}
            for i in range(len(row) - n + 1):
                table.setdefault(tuple(row[i:i + n - 1]), []).append(row[i + n - 1])
            self.continuations.append(table)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, length = input_ids.shape[0], input_ids.shape[-1]
        rows_per_item = rows // self.batch_size
        start = length + 1 - self.ngram_size
        processed = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            banned = self.continuations[row // rows_per_item].get(tuple(ids[start:length]), [])
            processed[row, banned] = -math.inf
        return processed


SequenceBias = Union[dict, list]


def _as_bias_dict(sequence_bias: SequenceBias) -> dict[tuple, float]:
    """``{(ids...): bias}`` from a dict of tuples or a list of ``[[ids...], bias]`` pairs, checked."""
    usage = ("`sequence_bias` has to be a non-empty dict {(token ids...): bias} or a non-empty list of "
             "[[token ids...], bias] pairs, with non-negative integer ids and real biases")
    if isinstance(sequence_bias, dict):
        pairs = list(sequence_bias.items())
        if not all(isinstance(key, tuple) for key, _ in pairs):
            raise ValueError(f"{usage}; dict keys must be tuples, but it is {sequence_bias!r}.")
    elif isinstance(sequence_bias, list):
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], (list, tuple))
                   for p in sequence_bias):
            raise ValueError(f"{usage}, but it is {sequence_bias!r}.")
        pairs = [(tuple(ids), bias) for ids, bias in sequence_bias]
    else:
        raise ValueError(f"{usage}, but it is {sequence_bias!r}.")
    if not pairs:
        raise ValueError(f"{usage}, but it is empty.")
    for ids, bias in pairs:
        if not ids or not all(is_token_id(t) for t in ids):
            raise ValueError(f"{usage}; {list(ids)!r} is not a non-empty list of token ids.")
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real) or math.isnan(bias):
            raise ValueError(f"{usage}; the bias {bias!r} of {list(ids)!r} is not a number.")
    return {tuple(int(t) for t in ids): float(bias) for ids, bias in pairs}


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add ``bias`` to token ``t_k`` whenever the row ends with ``t_1 .. t_{k-1}`` (the prompt counts).

    One-token sequences are biased at every step (OpenAI's ``logit_bias``, generalised to
    sequences). Biases are summed per step into one ``[rows, vocab]`` float32 tensor, then added.

    Args:
        sequence_bias: ``{(t_1, ..., t_k): bias}`` or ``[[[t_1, ..., t_k], bias], ...]``; biases are
            real numbers (``-inf`` bans; an int is accepted, unlike the reference).

    Raises:
        ValueError: at the first call, when an id is outside the vocabulary.
    """

    name = "sequence_bias"

    def __init__(self, sequence_bias: SequenceBias):
        self.sequence_bias = _as_bias_dict(sequence_bias)
        self._prepared_for: Optional[tuple] = None

    def _prepare(self, vocab: int, device: torch.device) -> None:
        """Single-token biases as a ``[vocab]`` tensor; longer sequences grouped by prefix length."""
        outside = [t for ids in self.sequence_bias for t in ids if t >= vocab]
        if outside:
            raise ValueError(f"`{self.name}` biases token ids {outside}, outside the model's vocabulary "
                             f"[0, {vocab}).")
        self._single = torch.zeros(vocab, dtype=torch.float, device=device)
        singles = {ids[0]: bias for ids, bias in self.sequence_bias.items() if len(ids) == 1}
        if singles:
            self._single[list(singles)] = torch.tensor(list(singles.values()), device=device)
        by_prefix_length: dict[int, list] = {}
        for ids, bias in self.sequence_bias.items():
            if len(ids) > 1:
                by_prefix_length.setdefault(len(ids) - 1, []).append((ids, bias))
        self._groups = [
            (torch.tensor([ids[:-1] for ids, _ in group], device=device),                # [n, k] prefixes
             torch.tensor([ids[-1] for ids, _ in group], device=device),                 # [n] last tokens
             torch.tensor([bias for _, bias in group], dtype=torch.float, device=device))  # [n] biases
            for group in by_prefix_length.values()]
        self._prepared_for = (vocab, device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prepared_for != (scores.shape[-1], scores.device):
            self._prepare(scores.shape[-1], scores.device)
        bias = torch.zeros_like(scores)
        bias += self._single
        for prefixes, last_tokens, biases in self._groups:
            k = prefixes.shape[1]
            if k > input_ids.shape[1]:
                continue
            ends_with_prefix = (input_ids[:, None, -k:] == prefixes).all(-1)       # [rows, n]
            bias.index_add_(1, last_tokens, torch.where(ends_with_prefix, biases, 0.0).to(bias.dtype))
        return scores + bias


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Never complete a bad word: a :class:`SequenceBiasLogitsProcessor` with bias ``-inf``.

    A bad word that is exactly one eos token is dropped from the list (use ``min_new_tokens`` or
    ``suppress_tokens`` to hold eos back), as the reference does.

    Args:
        bad_words_ids: a non-empty list of non-empty lists of token ids.
        eos_token_id: an id, a list of ids, a tensor, or None.
    """

    name = "bad_words_ids"

    def __init__(self, bad_words_ids: list[list[int]],
                 eos_token_id: Optional[Union[int, Sequence[int], torch.Tensor]] = None):
        usage = "`bad_words_ids` has to be a non-empty list of non-empty lists of non-negative token ids"
        if not isinstance(bad_words_ids, list) or not bad_words_ids:
            raise ValueError(f"{usage}, but is {bad_words_ids!r}.")
        for word in bad_words_ids:
            if not isinstance(word, list) or not word or not all(is_token_id(t) for t in word):
                raise ValueError(f"{usage}; {word!r} is not.")
        self.bad_words_ids = bad_words_ids
        eos = (set(id_tensor(eos_token_id, name="eos_token_id", negative_ok=True).tolist())  # -1: eos off
               if eos_token_id is not None else set())
        kept = [word for word in bad_words_ids if not (len(word) == 1 and word[0] in eos)]
        if not kept:
            raise ValueError(f"`bad_words_ids` {bad_words_ids!r} only lists eos tokens, which it never bans; "
                             "use min_new_tokens (or suppress_tokens) to hold eos back.")
        super().__init__({tuple(word): -math.inf for word in kept})


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """``scores[t] = -inf`` for every listed token, at every step.

    Args:
        suppress_tokens: a list of token ids (ids outside the vocabulary are ignored here;
            ``generate`` refuses them before starting).
    """

    name = "suppress_tokens"

    def __init__(self, suppress_tokens: Sequence[int], device: Union[str, torch.device] = "cpu"):
        self.suppress_tokens = id_tensor(list(suppress_tokens), device, "suppress_tokens")
        self._banned = None   # [vocab] bool, built at the first call (it runs every step)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        banned = self._banned
        if banned is None or banned.shape[0] != scores.shape[-1] or banned.device != scores.device:
            banned = self._banned = vocab_mask(self.suppress_tokens, scores.shape[-1], scores.device)
        return torch.where(banned, -math.inf, scores)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """``scores[t] = -inf`` for every listed token, only when ``len(input_ids) == begin_index``.

    ``generate`` sets ``begin_index`` to the prompt length (plus 1 when a one-token prompt is
    followed by a forced bos), so it acts on the first generated token only.

    Args:
        begin_suppress_tokens: a list of token ids.
        begin_index: the sequence length at which to suppress.
    """

    name = "begin_suppress_tokens"
    position_dependent = True      # reads the row's length

    def __init__(self, begin_suppress_tokens: Sequence[int], begin_index: int,
                 device: Union[str, torch.device] = "cpu"):
        self.begin_suppress_tokens = id_tensor(list(begin_suppress_tokens), device, "begin_suppress_tokens")
        self.begin_index = begin_index

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        banned = vocab_mask(self.begin_suppress_tokens, scores.shape[-1], scores.device)
        return torch.where(banned, -math.inf, scores)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Keep only the tokens ``prefix_allowed_tokens_fn(batch_id, row_ids)`` allows (De Cao et al.,
    2021, "Autoregressive Entity Retrieval"): ``scores + mask`` with ``mask`` 0 there, ``-inf`` elsewhere.

    If a batch item has no allowed token with a finite score left, its rows get the bare mask (0 on
    the allowed tokens), so generation can go on.

    Args:
        prefix_allowed_tokens_fn: ``(batch_id: int, input_ids: [len] int64) -> list of ids``; it must
            never return an empty list. ``batch_id`` is ``row // num_beams``.
        num_beams: rows per batch item (1 without beams).
    """

    name = "prefix_allowed_tokens_fn"
    position_dependent = True      # the user's function gets the whole row

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list], num_beams: int):
        if not callable(prefix_allowed_tokens_fn):
            raise ValueError(f"`prefix_allowed_tokens_fn` has to be callable, but is {prefix_allowed_tokens_fn!r}.")
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beams = self._num_beams
        mask = torch.full_like(scores, -math.inf)
        for row in range(input_ids.shape[0]):
            allowed = self._prefix_allowed_tokens_fn(row // beams, input_ids[row])
            if len(allowed) == 0:
                raise ValueError(f"`prefix_allowed_tokens_fn` returned an empty list for batch ID {row // beams}: "
                                 "the constraint cannot be satisfied; return at least one token id.")
            mask[row, allowed] = 0
        processed = scores + mask
        stuck = processed.amax(dim=-1).isneginf().view(-1, beams).all(dim=-1, keepdim=True)
        return torch.where(stuck.repeat_interleave(beams, dim=0), mask, processed)
