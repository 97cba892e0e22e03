"""Temperature, top-k and top-p: the reference's sampling warpers.

Each class has the name, constructor and exact tensor operations of its ``transformers`` twin, so
scores are equal bit for bit (``-inf`` placement included).
"""

from __future__ import annotations

import torch

from .base import LogitsProcessor


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by ``temperature``: ``scores / T``.

    ``T < 1`` sharpens the distribution, ``T > 1`` flattens it; the argmax never changes.

    Args:
        temperature: a number > 0 (an int is accepted and converted, unlike the reference).
    """

    name = "temperature"

    def __init__(self, temperature: float):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(
                f"`temperature` (={temperature!r}) has to be a strictly positive number; for greedy "
                "decoding set do_sample=False instead of temperature=0.")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the ``top_k`` highest scores, set the rest to ``filter_value``.

    Every token tied with the k-th highest score is kept, as in the reference.

    Args:
        top_k: an int > 0; the effective k is ``max(top_k, min_tokens_to_keep)``, capped at the vocab.
    """

    name = "top_k"

    def __init__(self, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer (or 0 to disable it), but is {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.size(-1))
        kth_best = torch.topk(scores, k)[0][..., -1, None]
        return scores.masked_fill(scores < kth_best, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling (Holtzman et al., 2019, "The Curious Case of Neural Text Degeneration").

    Keep the smallest set of most likely tokens whose probabilities add up to more than ``top_p``:
    sort ascending, remove the tokens whose cumulative probability is ``<= 1 - top_p``, but always
    keep the ``min_tokens_to_keep`` most likely ones.

    Args:
        top_p: a float in [0, 1]; 0 keeps only the most likely token.
    """

    name = "top_p"

    def __init__(self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 <= top_p <= 1.0:
            raise ValueError(f"`top_p` has to be a float in [0, 1], but is {top_p!r}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep!r}")
        self.top_p = float(top_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        sorted_scores, sorted_ids = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[..., -self.min_tokens_to_keep:] = False
        remove = remove_sorted.scatter(1, sorted_ids, remove_sorted)
        return scores.masked_fill(remove, self.filter_value)
