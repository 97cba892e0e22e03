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


def _check_keep(min_tokens_to_keep: int) -> int:
    if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep!r}")
    return min_tokens_to_keep


def _check_unit(value: float, name: str, low_open: bool, high_open: bool, hint: str = "") -> float:
    """``value`` as a float, or ValueError unless it lies in the (half-)open unit interval asked for."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (0.0 < value if low_open else 0.0 <= value) and (value < 1.0 if high_open else value <= 1.0))
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"`{name}` has to be a float in {interval}{hint}, but is {value!r}")
    return float(value)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits)`` per row, ``[rows]``, as ``torch.distributions`` computes it."""
    return torch.distributions.Categorical(logits=logits).entropy()


def _kth_best(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[rows, 1]``: the k-th highest score of each row (k capped at the vocabulary)."""
    return torch.topk(scores, min(k, scores.size(-1)))[0][..., -1, None]


class TopHLogitsWarper(LogitsProcessor):
    """Top-H: keep the most likely tokens while their entropy stays within ``top_h`` times the whole.

    (Baghaei Potraghloo et al., 2025, "Top-H Decoding: Adapting the Creativity and Coherence with
    Bounded Entropy in Text Generation".) Over the 100 best tokens, with ``p = softmax`` of them:
    keep tokens in descending order while ``cumsum(-p log p) <= top_h * H(p)``; the best token is
    always kept. Takes no ``min_tokens_to_keep``.

    Args:
        top_h: a float in (0, 1].
    """

    name = "top_h"
    top_n = 100

    def __init__(self, top_h: float, filter_value: float = -float("inf")):
        self.top_h = _check_unit(top_h, "top_h", low_open=True, high_open=False)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best, best_ids = torch.topk(scores, min(self.top_n, scores.shape[-1]), dim=-1, largest=True, sorted=True)
        distribution = torch.distributions.Categorical(logits=best)
        probs = distribution.probs
        budget = (distribution.entropy() * self.top_h).unsqueeze(-1)          # [rows, 1]
        spent = torch.cumsum(-probs * torch.log(probs), dim=-1)               # [rows, top_n]
        keep_sorted = spent <= budget
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter(1, best_ids, keep_sorted)
        return scores.masked_fill(~keep, self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Min-p (Nguyen et al., 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent
    LLM Outputs"): remove tokens with ``p < min_p * max(p)``, ``p = softmax(scores)``.

    The ``min_tokens_to_keep`` most likely tokens are always kept.

    Args:
        min_p: a float in [0, 1].
    """

    name = "min_p"

    def __init__(self, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        self.min_p = _check_unit(min_p, "min_p", low_open=False, high_open=False)
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        keep = torch.topk(probs, min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        remove.scatter_(-1, keep, False)
        return scores.masked_fill(remove, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling (Meister et al., 2022, "Locally Typical Sampling").

    Sort tokens by ``|-log p - H|`` (how far their surprisal is from the entropy ``H``), ascending;
    keep the shortest prefix of that order whose probability mass reaches ``mass`` (ties at the
    boundary kept), and at least ``min_tokens_to_keep`` tokens.

    Args:
        mass: ``typical_p``, a float in (0, 1).
    """

    name = "typical_p"

    def __init__(self, mass: float = 0.9, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        self.mass = _check_unit(mass, "typical_p", low_open=True, high_open=True, hint=" (1 disables it in generate)")
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_p = torch.nn.functional.log_softmax(scores, dim=-1)
        entropy = -(log_p * torch.exp(log_p)).nansum(-1, keepdim=True)
        distance = torch.abs(-log_p - entropy)
        sorted_distance, order = torch.sort(distance, descending=False)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_distance.shape[-1] - 1)
        remove_sorted = sorted_distance > sorted_distance.gather(1, last.view(-1, 1))
        remove_sorted[..., :self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        return scores.masked_fill(remove, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Epsilon sampling (Hewitt et al., 2022, "Truncation Sampling as Language Model Desmoothing"):
    remove tokens with ``p < epsilon``, except the ``min_tokens_to_keep`` best.

    Args:
        epsilon: ``epsilon_cutoff``, a float in (0, 1).
    """

    name = "epsilon_cutoff"

    def __init__(self, epsilon: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        self.epsilon = _check_unit(epsilon, "epsilon_cutoff", low_open=True, high_open=True,
                                   hint=" (0 disables it in generate)")
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        remove = scores.softmax(dim=-1) < self.epsilon
        remove = remove & (scores < _kth_best(scores, self.min_tokens_to_keep))
        return scores.masked_fill(remove, self.filter_value)


class EtaLogitsWarper(LogitsProcessor):
    """Eta sampling (Hewitt et al., 2022, "Truncation Sampling as Language Model Desmoothing"):
    remove tokens with ``p < eta``, ``eta = min(epsilon, sqrt(epsilon) * exp(-H))``, ``H`` the
    entropy of ``softmax(scores)``; the ``min_tokens_to_keep`` best are always kept.

    Args:
        epsilon: ``eta_cutoff``, a float in (0, 1).
    """

    name = "eta_cutoff"

    def __init__(self, epsilon: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1,
                 device: str = "cpu"):
        epsilon = _check_unit(epsilon, "eta_cutoff", low_open=True, high_open=True, hint=" (0 disables it in generate)")
        # reference quirk: epsilon is kept as a float32 tensor, so the cutoff rounds as there.
        self.epsilon = torch.tensor(epsilon, device=device)
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        eps = self.epsilon.to(scores.device)
        eta = torch.min(eps, torch.sqrt(eps) * torch.exp(-_entropy(scores)))[..., None]
        remove = scores.softmax(dim=-1) < eta
        remove = remove & (scores < _kth_best(scores, self.min_tokens_to_keep))
        return scores.masked_fill(remove, self.filter_value)
