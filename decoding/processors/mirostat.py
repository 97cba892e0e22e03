"""Mirostat 2.0: truncate to the tokens whose surprise is at most ``mu``, and steer ``mu`` towards ``tau``.

Basu et al. 2021, "Mirostat: A Neural Text Decoding Algorithm that Directly Controls Perplexity"
(ICLR 2021, arXiv:2007.14966), Algorithm 2 ("Mirostat 2.0"); llama.cpp's ``mirostat_v2`` sampler
(``llama_sampler_mirostat_v2`` in ``src/llama-sampling.cpp``) is the definition implemented here.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..declarations import BEYOND, LAST, WARPER, Knob, Sampler
from .base import LogitsProcessor, accept_missing

_LN2 = math.log(2.0)


class MirostatV2LogitsWarper(LogitsProcessor):
    """Keep ``v`` iff ``-log2 p[v] <= mu_r``; after the step, ``mu_r -= eta * (-log2 q[x_r] - tau)``.

    ``p = softmax(scores[r])``; the most likely token is always kept. ``q`` is the renormalised
    distribution over the kept tokens and ``x_r`` the token row ``r`` then takes, which the loop
    reports through :meth:`accept`. ``mu`` starts at ``2 * tau`` for every row and is kept per row
    (a ``[rows]`` tensor), so rows never influence each other. Surprise is in bits, as in the paper.

    Stateful: :meth:`reset` forgets ``mu`` (it restarts at ``2 * tau``), :meth:`accept` updates it
    with tensor operations only (no host sync), :meth:`clone` gives an independent copy, and
    :meth:`reorder` follows beam search's choice of parent rows (beam sampling). A call for a new
    step before :meth:`accept` reported the last one raises (``model.generate`` never calls it).

    In llama.cpp mirostat replaces the rest of the sampler chain (temperature, then mirostat); here
    it is one warper among the others, applied after them in every order preset.

    Args:
        mirostat_tau: ``tau``, the target surprise in bits, a finite number > 0 (llama.cpp: 5.0).
        mirostat_eta: ``eta``, the learning rate, a finite number > 0 (llama.cpp: 0.1).
    """

    name = "mirostat_tau"
    stateful = True
    follows_beams = True

    def __init__(self, mirostat_tau: float, mirostat_eta: float = 0.1):
        check_mirostat(mirostat_tau, mirostat_eta)
        self.mirostat_tau = float(mirostat_tau)
        self.mirostat_eta = float(mirostat_eta)
        self.mu: Optional[torch.Tensor] = None           # [rows] float32, bits
        self._kept_logp: Optional[torch.Tensor] = None   # [rows, vocab] log q of the last call

    def reset(self) -> None:
        self.mu = None
        self._kept_logp = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._kept_logp is not None:                  # the last step's tokens were never accepted
            raise accept_missing(self)
        if self.mu is None or self.mu.shape[0] != scores.shape[0]:
            self.mu = torch.full((scores.shape[0],), 2.0 * self.mirostat_tau, dtype=torch.float32, device=scores.device)
        logp = scores.log_softmax(dim=-1)
        surprise = -logp / _LN2
        keep = (surprise <= self.mu[:, None]) | (scores == scores.amax(dim=-1, keepdim=True))
        kept = scores.masked_fill(~keep, -float("inf"))
        self._kept_logp = kept.log_softmax(dim=-1)
        return kept

    def reorder(self, beam_rows: torch.LongTensor) -> None:
        """Row ``j`` continues old row ``beam_rows[j]`` (``[rows]`` int): its ``mu`` and last distribution."""
        if self.mu is not None:
            index = beam_rows.long().to(self.mu.device)
            self.mu = self.mu.index_select(0, index)
            if self._kept_logp is not None:
                self._kept_logp = self._kept_logp.index_select(0, index)

    def accept(self, token_ids: torch.LongTensor) -> None:
        """``mu -= eta * (surprise of the chosen token - tau)``; ``token_ids``: ``[rows]`` int64."""
        if self._kept_logp is None:
            return
        surprise = -self._kept_logp.gather(1, token_ids[:, None].to(self._kept_logp.device))[:, 0] / _LN2
        self.mu = self.mu - self.mirostat_eta * (surprise - self.mirostat_tau)
        self._kept_logp = None


def check_mirostat(mirostat_tau, mirostat_eta) -> None:
    """``mirostat_tau`` and ``mirostat_eta``: finite numbers > 0."""
    for name, value in (("mirostat_tau", mirostat_tau), ("mirostat_eta", mirostat_eta)):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value <= 0):
            raise ValueError(f"`{name}` must be a finite number > 0, but is {value!r}.")


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.

MIROSTAT_ETA = Knob("mirostat_eta", BEYOND, "mirostat: the learning rate of mu", type=float,
                    check=lambda name, v: check_mirostat(5.0, v), values="> 0", companion=0.1)


def _build(settings, context):
    if settings.mirostat_tau is None:
        return None
    return MirostatV2LogitsWarper(settings.mirostat_tau, MIROSTAT_ETA.read(settings))


MIROSTAT = Sampler(
    MirostatV2LogitsWarper, stage=WARPER, build=_build,
    knobs=(Knob("mirostat_tau", BEYOND, "mirostat 2.0: the target surprise in bits (sampling)", type=float,
                check=lambda name, v: check_mirostat(v, MIROSTAT_ETA.companion), values="> 0"),
           MIROSTAT_ETA),
    places={"vllm": LAST, "llama.cpp": LAST, "mlx": LAST})
