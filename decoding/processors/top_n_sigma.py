"""Top-nσ: keep the tokens whose logit is within n standard deviations of the largest.

Tang et al. 2024, "Top-nσ: Not All Logits Are You Need" (arXiv:2411.07641); llama.cpp's
``top_n_sigma`` sampler (``llama_sampler_top_n_sigma`` in ``src/llama-sampling.cpp``).
"""

from __future__ import annotations

import math

import torch

from ..declarations import BEYOND, LAST, WARPER, Knob, Sampler
from .base import LogitsProcessor


class TopNSigmaLogitsWarper(LogitsProcessor):
    """Keep ``v`` iff ``scores[v] >= max(scores) - n * std(scores)``; the rest become ``-inf``.

    ``max`` and ``std`` are taken per row over the finite scores (tokens already at ``-inf`` are
    left out, as llama.cpp does), ``std`` being the population standard deviation
    ``sqrt(mean((s - mean(s))^2))``. The kept set does not change when all scores are divided by a
    temperature, so the place of this warper relative to temperature does not matter.

    Args:
        top_n_sigma: ``n``, a finite number > 0 (llama.cpp disables the sampler for ``n <= 0``;
            here that is an error).
    """

    name = "top_n_sigma"

    def __init__(self, top_n_sigma: float):
        if (isinstance(top_n_sigma, bool) or not isinstance(top_n_sigma, (int, float))
                or not math.isfinite(top_n_sigma) or top_n_sigma <= 0):
            raise ValueError(f"`top_n_sigma` must be a finite number > 0, but is {top_n_sigma!r}.")
        self.top_n_sigma = float(top_n_sigma)

    def threshold(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``max - n * std`` per row, ``[rows, 1]``, over the finite scores of ``scores`` ``[rows, vocab]``."""
        finite = torch.isfinite(scores)
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        values = scores.masked_fill(~finite, 0.0)
        mean = values.sum(dim=-1, keepdim=True) / count
        variance = ((values - mean).masked_fill(~finite, 0.0) ** 2).sum(dim=-1, keepdim=True) / count
        best = scores.masked_fill(~finite, -float("inf")).amax(dim=-1, keepdim=True)
        return best - self.top_n_sigma * variance.sqrt()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(scores < self.threshold(scores), -float("inf"))


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.


def _build(settings, context):
    return None if settings.top_n_sigma is None else TopNSigmaLogitsWarper(settings.top_n_sigma)


TOP_N_SIGMA = Sampler(
    TopNSigmaLogitsWarper, stage=WARPER, build=_build,
    knobs=(Knob("top_n_sigma", BEYOND, "keep the logits within n standard deviations of the largest (sampling)",
                type=float, check=lambda name, v: TopNSigmaLogitsWarper(v), values="> 0"),),
    places={"vllm": LAST, "llama.cpp": "before top_k", "mlx": LAST})
