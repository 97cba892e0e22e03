"""Dynamic temperature: a per-row temperature that grows with the entropy of the row's distribution.

llama.cpp's ``temp_ext`` sampler (``llama_sampler_temp_ext`` in ``src/llama-sampling.cpp``, options
``--dynatemp-range`` and ``--dynatemp-exp``), after the "DynaTemp" proposal by kalomaze (2023).
"""

from __future__ import annotations

import math

import torch

from ..declarations import BEYOND, WARPER, Knob, Sampler
from .base import LogitsProcessor


class DynamicTemperatureLogitsWarper(LogitsProcessor):
    """Divide row ``r`` by ``T_r = T_min + (T_max - T_min) * (H_r / log n_r) ** exponent``.

    With ``T = temperature`` and ``d = dynatemp_range``: ``T_min = max(0, T - d)``, ``T_max = T + d``.
    ``H_r`` is the entropy (nats) of ``softmax(scores[r])`` and ``n_r`` the number of finite scores,
    so ``H_r / log n_r`` in [0, 1] is the entropy relative to a uniform distribution over the
    candidates left: a confident row gets a temperature near ``T_min``, a flat one near ``T_max``.

    As in llama.cpp: a row with fewer than two candidates is left as it is, and where ``T_r`` is 0
    only the highest score is kept (greedy). This warper takes the place of ``temperature`` in the
    pipeline (both dividing would apply a temperature twice).

    Args:
        temperature: the centre ``T`` (> 0).
        dynatemp_range: ``d``, a finite number >= 0 (0 gives the fixed temperature ``T``).
        dynatemp_exponent: a finite number > 0 (1.0 by default, as in llama.cpp).
    """

    name = "dynatemp_range"

    def __init__(self, temperature: float, dynatemp_range: float, dynatemp_exponent: float = 1.0):
        check_dynatemp(dynatemp_range, dynatemp_exponent)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` (={temperature!r}) must be > 0 with dynatemp_range: it is the "
                             "centre of the dynamic range.")
        self.temperature = float(temperature)
        self.dynatemp_range = float(dynatemp_range)
        self.dynatemp_exponent = float(dynatemp_exponent)

    def temperatures(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``T_r`` per row, ``[rows]`` float32 (``T`` itself for rows with fewer than two candidates)."""
        low = max(0.0, self.temperature - self.dynatemp_range)
        high = self.temperature + self.dynatemp_range
        finite = torch.isfinite(scores)
        count = finite.sum(dim=-1)
        logp = scores.log_softmax(dim=-1)
        entropy = -(logp.exp() * logp).masked_fill(~finite, 0.0).sum(dim=-1)
        relative = (entropy / count.clamp(min=2).to(scores.dtype).log()).clamp(0.0, 1.0)
        dynamic = low + (high - low) * relative.pow(self.dynatemp_exponent)
        return torch.where(count >= 2, dynamic, torch.full_like(dynamic, self.temperature))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        temperature = self.temperatures(scores)[:, None]
        greedy = scores.masked_fill(scores < scores.amax(dim=-1, keepdim=True), -float("inf"))
        scaled = scores / temperature.clamp(min=torch.finfo(scores.dtype).tiny)
        return torch.where(temperature > 0, scaled, greedy)


def check_dynatemp(dynatemp_range, dynatemp_exponent) -> None:
    """``dynatemp_range`` finite and >= 0 (0 means a fixed temperature), ``dynatemp_exponent`` finite and > 0."""
    if (isinstance(dynatemp_range, bool) or not isinstance(dynatemp_range, (int, float))
            or not math.isfinite(dynatemp_range) or dynatemp_range < 0):
        raise ValueError(f"`dynatemp_range` must be a finite number >= 0 (0 or None: a fixed "
                         f"temperature), but is {dynatemp_range!r}.")
    if (isinstance(dynatemp_exponent, bool) or not isinstance(dynatemp_exponent, (int, float))
            or not math.isfinite(dynatemp_exponent) or dynatemp_exponent <= 0):
        raise ValueError(f"`dynatemp_exponent` must be a finite number > 0, but is {dynatemp_exponent!r}.")


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.

DYNATEMP_EXPONENT = Knob("dynatemp_exponent", BEYOND, "dynamic temperature: the exponent of the relative entropy",
                         type=float, check=lambda name, v: check_dynatemp(0.0, v), values="> 0", companion=1.0)


def _build(settings, context):
    if settings.dynatemp_range is None or settings.dynatemp_range == 0:
        return None
    return DynamicTemperatureLogitsWarper(settings.temperature, settings.dynatemp_range,
                                          DYNATEMP_EXPONENT.read(settings))


DYNAMIC_TEMPERATURE = Sampler(
    DynamicTemperatureLogitsWarper, stage=WARPER, build=_build, replaces="temperature",
    knobs=(Knob("dynatemp_range", BEYOND, "entropy-scaled temperature in [T - range, T + range] (sampling)",
                type=float, check=lambda name, v: check_dynatemp(v, DYNATEMP_EXPONENT.companion), values=">= 0"),
           DYNATEMP_EXPONENT),
    places={"vllm": "after temperature", "llama.cpp": "after temperature", "mlx": "after temperature"})
