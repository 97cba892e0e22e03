"""Watermarking: bias the scores towards a pseudo-random, key-dependent part of the vocabulary.

``watermarking_config`` may be a ``transformers.WatermarkingConfig``, a
``transformers.SynthIDTextWatermarkingConfig``, or a dict of their fields (a dict with ``ngram_len``
means SynthID, any other dict the green-list watermark). Both processors draw from private
``torch.Generator`` objects only: the global random stream is untouched, so sampling still
matches the reference draw for draw.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence, Union

import torch

from .base import LogitsProcessor

GREENLIST_FIELDS = {"greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": 15485863, "seeding_scheme": "lefthash",
                    "context_width": 1}
SYNTHID_FIELDS = {"ngram_len": None, "keys": None, "context_history_size": 1024, "sampling_table_seed": 0,
                  "sampling_table_size": 2 ** 16, "skip_first_ngram_calls": False, "debug_mode": False}


class WatermarkLogitsProcessor(LogitsProcessor):
    """Green-list watermark (Kirchenbauer et al., 2023, "A Watermark for Large Language Models";
    "On the Reliability of Watermarks for Large Language Models").

    Per row: seed a generator from the context, take the first ``int(vocab * greenlist_ratio)`` ids
    of ``randperm(vocab)`` as the green list, and add ``bias`` to their scores.

    - ``"lefthash"``: seed ``hashing_key * last_token``.
    - ``"selfhash"``: for each of the 40 best candidates ``c``, seed from the last ``context_width``
      tokens and ``c`` itself (``min(key * T[x] * T[c])`` over a fixed random table ``T``); ``c`` is
      green if it lies in its own green list.

    Args:
        vocab_size: the model config's vocabulary size.
        device: where the generators and tables live.
        greenlist_ratio: a float in (0, 1).
        bias: the number added to green scores.
        hashing_key: an integer key.
        seeding_scheme: ``"lefthash"`` or ``"selfhash"``.
        context_width: an integer >= 1 (tokens hashed by ``"selfhash"``).
    """

    name = "watermarking_config"
    table_size = 1_000_003
    candidates = 40

    def __init__(self, vocab_size: int, device: Union[str, torch.device], greenlist_ratio: float = 0.25,
                 bias: float = 2.0, hashing_key: int = 15485863, seeding_scheme: str = "lefthash",
                 context_width: int = 1):
        check_greenlist_fields(dict(greenlist_ratio=greenlist_ratio, bias=bias, hashing_key=hashing_key,
                                    seeding_scheme=seeding_scheme, context_width=context_width))
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * greenlist_ratio)
        self.bias = bias
        self.hash_key = hashing_key
        self.seeding_scheme = seeding_scheme
        self.context_width = context_width
        self.rng = torch.Generator(device=device)
        self._table = None

    def _fixed_table(self) -> torch.Tensor:
        """``randperm(1_000_003)`` from a generator seeded with the key (selfhash only)."""
        if self._table is None:
            self.rng.manual_seed(self.hash_key)
            self._table = torch.randperm(self.table_size, generator=self.rng, device=self.rng.device)
        return self._table

    def _greenlist(self, sequence: torch.LongTensor) -> torch.LongTensor:
        """Green ids ``[greenlist_size]`` for a context ``sequence`` (``[len]`` int64)."""
        context = sequence[-self.context_width:]
        if self.seeding_scheme == "selfhash":
            table = self._fixed_table()
            left = table[context % self.table_size] + 1
            right = table[context[-1] % self.table_size] + 1
            seed = (self.hash_key * left * right).min().item()   # int64 arithmetic (wraps)
        else:
            seed = self.hash_key * context[-1].item()              # Python integers
        self.rng.manual_seed(seed % (2 ** 64 - 1))
        return torch.randperm(self.vocab_size, device=sequence.device, generator=self.rng)[:self.greenlist_size]

    def _self_green(self, sequence: torch.LongTensor, row_scores: torch.Tensor) -> torch.LongTensor:
        """Among the 40 best candidates, those in the green list seeded by themselves."""
        ranked = row_scores.sort(dim=-1, descending=True)[1]
        green = [c for c in ranked[:self.candidates]
                 if c in self._greenlist(torch.cat([sequence, c[None]], dim=-1))]
        return torch.stack(green) if green else ranked[:0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.context_width:
            return scores
        processed = scores.clone()
        for row, sequence in enumerate(input_ids):
            if self.seeding_scheme == "selfhash":
                green = self._self_green(sequence, scores[row])
            else:
                green = self._greenlist(sequence)
            processed[row, green] = processed[row, green] + self.bias
        return processed


class SynthIDTextWatermarkLogitsProcessor(LogitsProcessor):
    """SynthID-Text tournament watermark (Dathathri et al., 2024, Nature, "Scalable watermarking for
    identifying large language model outputs").

    For each candidate token ``t``, hash the last ``ngram_len - 1`` tokens, ``t`` and each key into
    a table of random bits ``g_1..g_depth``; then, layer by layer, reweight
    ``p <- p * (1 + g_i - sum(g_i * p))``; return ``log p`` (``-inf`` as ``finfo.min``). A context
    already seen (among the last ``context_history_size``) keeps its scores unchanged.

    The state (context and its history) starts empty (zeros) at the first call and then follows
    the generated tokens; :meth:`reset` starts over.

    Args:
        ngram_len: context length plus one, an integer >= 1.
        keys: the watermarking keys, one per layer (non-empty list of integers).
        sampling_table_size: number of random bits, in [1, 2**24].
        sampling_table_seed: seed of the bit table.
        context_history_size: how many context hashes are remembered.
        device: where the tables live.
        skip_first_ngram_calls: leave the first ``ngram_len - 1`` calls unwatermarked.
        debug_mode: replace the scores by ones first (to test the watermark alone).
    """

    name = "watermarking_config"
    one_call_per_step = True       # its context and history move one token per call
    multiplier = 6364136223846793005   # the PCG / Knuth MMIX linear congruential constants
    increment = 1

    def __init__(self, ngram_len: int, keys: Sequence[int], sampling_table_size: int, sampling_table_seed: int,
                 context_history_size: int, device: Union[str, torch.device],
                 skip_first_ngram_calls: bool = False, debug_mode: bool = False):
        check_synthid_fields(dict(ngram_len=ngram_len, keys=keys, sampling_table_size=sampling_table_size,
                                  sampling_table_seed=sampling_table_seed, context_history_size=context_history_size,
                                  skip_first_ngram_calls=skip_first_ngram_calls, debug_mode=debug_mode))
        self.ngram_len = ngram_len
        self.keys = torch.tensor(list(keys), device=device)
        generator = torch.Generator(device=device).manual_seed(sampling_table_seed)
        self.sampling_table = torch.randint(0, 2, (sampling_table_size,), generator=generator, device=device)
        self.context_history_size = context_history_size
        self.device = device
        self.skip_first_ngram_calls = skip_first_ngram_calls
        self.debug_mode = debug_mode
        self.reset()

    def reset(self) -> None:
        self._context = None        # [rows, ngram_len - 1] int64
        self._history = None        # [rows, context_history_size] int64 context hashes
        self._calls = 0

    def _hash(self, current: torch.LongTensor, data: torch.LongTensor) -> torch.LongTensor:
        """Fold the last dimension of ``data`` into ``current``: ``h = (h + x) * a + c`` (int64, wrapping)."""
        for i in range(data.shape[-1]):
            current = (current + data[..., i]) * self.multiplier + self.increment
        return current

    def _g_values(self, context: torch.LongTensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g [rows, vocab, depth] int64 bits, context hash [rows])``."""
        rows = context.shape[0]
        context_hash = self._hash(torch.ones(rows, dtype=torch.long, device=self.device), context)
        candidates = torch.arange(vocab, device=self.device)
        with_token = self._hash(context_hash[:, None], candidates[None, :, None])               # [rows, vocab]
        with_keys = self._hash(with_token[..., None], self.keys[None, None, :, None])           # [rows, vocab, depth]
        return self.sampling_table[with_keys % self.sampling_table.shape[0]], context_hash

    @staticmethod
    def _reweight(scores: torch.Tensor, g_values: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=1)
        for i in range(g_values.shape[-1]):
            g = g_values[:, :, i]
            probs = probs * (1 + g - (g * probs).sum(axis=1, keepdims=True))
        log_probs = torch.log(probs)
        return torch.where(torch.isfinite(log_probs), log_probs, torch.finfo(log_probs.dtype).min)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids should be [rows, len], but has shape {tuple(input_ids.shape)}")
        rows, vocab = scores.shape
        if self.debug_mode:
            scores = torch.ones_like(scores)
        if self._context is None:
            self._context = torch.zeros(rows, self.ngram_len - 1, dtype=torch.long, device=self.device)
            self._history = torch.zeros(rows, self.context_history_size, dtype=torch.long, device=self.device)
        else:
            self._context = torch.cat([self._context, input_ids[:, -1:]], dim=1)[:, 1:]
        self._calls += 1
        if self.skip_first_ngram_calls and self._calls < self.ngram_len:
            return scores
        g_values, context_hash = self._g_values(self._context, vocab)
        watermarked = self._reweight(scores, g_values)
        repeated = (self._history == context_hash[:, None]).any(dim=1, keepdim=True)
        self._history = torch.cat([context_hash[:, None], self._history], dim=1)[:, :-1]
        return torch.where(repeated, scores, watermarked)


def _fields(config: Any, defaults: dict) -> dict:
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise ValueError(f"`watermarking_config` has unknown keys {unknown}; the known ones are {sorted(defaults)}.")
        return {**defaults, **config}
    return {name: getattr(config, name, default) for name, default in defaults.items()}


def is_synthid(config: Any) -> bool:
    return "ngram_len" in config if isinstance(config, dict) else hasattr(config, "ngram_len")


def _int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_greenlist_fields(f: dict) -> None:
    usage = "`watermarking_config`"
    if f["seeding_scheme"] not in ("lefthash", "selfhash"):
        raise ValueError(f"{usage}: seeding_scheme has to be 'lefthash' or 'selfhash', but is {f['seeding_scheme']!r}.")
    ratio = f["greenlist_ratio"]
    if not (isinstance(ratio, numbers.Real) and not isinstance(ratio, bool) and 0.0 < ratio < 1.0):
        raise ValueError(f"{usage}: greenlist_ratio has to be a float in (0, 1), but is {ratio!r}.")
    bias = f["bias"]
    if not (isinstance(bias, numbers.Real) and not isinstance(bias, bool) and math.isfinite(bias)):
        raise ValueError(f"{usage}: bias has to be a finite number, but is {bias!r}.")
    if not _int(f["hashing_key"]):
        raise ValueError(f"{usage}: hashing_key has to be an integer, but is {f['hashing_key']!r}.")
    if not (_int(f["context_width"]) and f["context_width"] >= 1):
        raise ValueError(f"{usage}: context_width has to be an integer >= 1, but is {f['context_width']!r}.")


def check_synthid_fields(f: dict) -> None:
    usage = "`watermarking_config` (SynthID)"
    if not (_int(f["ngram_len"]) and f["ngram_len"] >= 1):
        raise ValueError(f"{usage}: ngram_len has to be an integer >= 1, but is {f['ngram_len']!r}.")
    keys = f["keys"]
    if not (isinstance(keys, (list, tuple)) and keys and all(_int(k) for k in keys)):
        raise ValueError(f"{usage}: keys has to be a non-empty list of integers, but is {keys!r}.")
    if not (_int(f["sampling_table_size"]) and 1 <= f["sampling_table_size"] <= 2 ** 24):
        raise ValueError(f"{usage}: sampling_table_size has to be an integer in [1, 2**24], "
                         f"but is {f['sampling_table_size']!r}.")
    if not _int(f["sampling_table_seed"]):
        raise ValueError(f"{usage}: sampling_table_seed has to be an integer, but is {f['sampling_table_seed']!r}.")
    if not (_int(f["context_history_size"]) and f["context_history_size"] >= 1):
        raise ValueError(f"{usage}: context_history_size has to be an integer >= 1, "
                         f"but is {f['context_history_size']!r}.")
    for flag in ("skip_first_ngram_calls", "debug_mode"):
        if not isinstance(f[flag], bool):
            raise ValueError(f"{usage}: {flag} has to be True or False, but is {f[flag]!r}.")


def check_watermarking_config(config: Any) -> None:
    """ValueError naming the field and its valid range when ``config`` is not a usable watermark config."""
    if is_synthid(config):
        check_synthid_fields(_fields(config, SYNTHID_FIELDS))
    else:
        check_greenlist_fields(_fields(config, GREENLIST_FIELDS))


def watermark_processor(config: Any, vocab_size: int, device: Union[str, torch.device]) -> LogitsProcessor:
    """The processor a ``watermarking_config`` asks for (the reference's ``construct_processor``)."""
    if is_synthid(config):
        f = _fields(config, SYNTHID_FIELDS)
        return SynthIDTextWatermarkLogitsProcessor(device=device, **f)
    return WatermarkLogitsProcessor(vocab_size, device, **_fields(config, GREENLIST_FIELDS))
