"""XTC, "Exclude Top Choices": sometimes remove the most likely tokens, keeping the least likely viable one.

By p-e-w (text-generation-webui PR #6335, 2024); the definition implemented is llama.cpp's
``xtc`` sampler (``llama_sampler_xtc`` in ``src/llama-sampling.cpp``), also in mlx-lm.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..declarations import BEYOND, LAST, WARPER, Knob, Sampler
from ..seeding import AUX_STREAM, row_generator
from .base import LogitsProcessor


class XTCLogitsWarper(LogitsProcessor):
    """With probability ``xtc_probability``: remove every ``v`` with ``p[v] >= t`` and ``p[v] > min{p[u] : p[u] >= t}``.

    ``p = softmax(scores)`` per row and ``t = xtc_threshold``. In words: when at least two tokens
    reach the threshold, all of them but the least likely are set to ``-inf``; with fewer than two,
    or when the row's coin says no, the row is left as it is. Each row tosses its own coin
    ``u ~ U[0, 1)`` every step and XTC acts when ``u < xtc_probability``.

    Random numbers: without ``seeds``, one ``torch.rand(rows)`` from torch's global generator per
    call; with ``seeds``, row ``r`` draws from ``row_generator(seeds[r], step, AUX_STREAM)``, where
    ``step = input_ids.shape[1] - prompt_length`` is the index of the token being chosen, so its
    coin does not depend on the rest of the batch.

    Differences from llama.cpp: tokens tied at the least likely qualifying probability are all kept
    (llama.cpp keeps the one its sort puts last); ``xtc_threshold`` above 0.5 is an error rather
    than a silent no-op.

    Args:
        xtc_probability: in [0, 1].
        xtc_threshold: in (0, 0.5] (llama.cpp's default is 0.1).
        min_tokens_to_keep: XTC does not act on a row where fewer finite tokens would remain.
        seeds: per-row seeds (``generate(..., seed=...)``), or None for the global generator.
        prompt_length: the padded prompt length (to tell the step from ``input_ids``).
    """

    name = "xtc_probability"
    position_reason = "with seed= keys each row's coin by its length"

    def __init__(self, xtc_probability: float, xtc_threshold: float = 0.1, min_tokens_to_keep: int = 1,
                 seeds: Optional[Sequence[int]] = None, prompt_length: int = 0):
        check_xtc(xtc_probability, xtc_threshold)
        self.xtc_probability = float(xtc_probability)
        self.xtc_threshold = float(xtc_threshold)
        self.min_tokens_to_keep = int(min_tokens_to_keep)
        self.seeds = None if seeds is None else list(seeds)
        self.prompt_length = int(prompt_length)

    @property
    def position_dependent(self) -> bool:
        """With ``seeds``, a row's coin is keyed by its step, read off the row's length."""
        return self.seeds is not None

    def coins(self, input_ids: torch.LongTensor, rows: int, device: torch.device) -> torch.Tensor:
        """This step's ``u ~ U[0, 1)`` per row, ``[rows]`` float32."""
        if self.seeds is None:
            return torch.rand(rows, device=device)
        step = input_ids.shape[1] - self.prompt_length
        return torch.cat([torch.rand(1, generator=row_generator(seed, step, AUX_STREAM, device), device=device)
                          for seed in self.seeds])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        act = self.coins(input_ids, scores.shape[0], scores.device) < self.xtc_probability   # [rows]
        probs = scores.softmax(dim=-1)
        top = probs >= self.xtc_threshold
        least = probs.masked_fill(~top, float("inf")).amin(dim=-1, keepdim=True)
        remove = top & (probs > least)
        remaining = torch.isfinite(scores).sum(dim=-1) - remove.sum(dim=-1)
        act &= (top.sum(dim=-1) >= 2) & (remaining >= self.min_tokens_to_keep)
        return scores.masked_fill(remove & act[:, None], -float("inf"))


def check_xtc(xtc_probability, xtc_threshold) -> None:
    """``xtc_probability`` in [0, 1], ``xtc_threshold`` in (0, 0.5]."""
    if (isinstance(xtc_probability, bool) or not isinstance(xtc_probability, (int, float))
            or not 0.0 <= xtc_probability <= 1.0):
        raise ValueError(f"`xtc_probability` must be a number in [0, 1], but is {xtc_probability!r}.")
    if (isinstance(xtc_threshold, bool) or not isinstance(xtc_threshold, (int, float))
            or not math.isfinite(xtc_threshold) or not 0.0 < xtc_threshold <= 0.5):
        raise ValueError(f"`xtc_threshold` must be a number in (0, 0.5] (above 0.5 at most one token can "
                         f"reach it, so XTC would never act), but is {xtc_threshold!r}.")


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.

XTC_THRESHOLD = Knob("xtc_threshold", BEYOND, "XTC: the probability a top choice must reach", type=float,
                     check=lambda name, v: check_xtc(0.0, v), values="(0, 0.5]", companion=0.1)


def _build(settings, context):
    if settings.xtc_probability is None or settings.xtc_probability == 0:
        return None
    return XTCLogitsWarper(settings.xtc_probability, XTC_THRESHOLD.read(settings), context.min_tokens_to_keep,
                           seeds=context.seeds, prompt_length=context.prompt_length)


XTC = Sampler(
    XTCLogitsWarper, stage=WARPER, build=_build,
    knobs=(Knob("xtc_probability", BEYOND, "XTC: how often to drop the top choices but the least likely one "
                "(sampling)", type=float, check=lambda name, v: check_xtc(v, XTC_THRESHOLD.companion),
                values="[0, 1]"),
           XTC_THRESHOLD),
    places={"vllm": LAST, "llama.cpp": "after min_p", "mlx": "after min_p"})
