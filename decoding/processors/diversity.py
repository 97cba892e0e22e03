"""The Hamming diversity penalty of diverse (group) beam search (``diversity_penalty``).

Vijayakumar et al., "Diverse Beam Search: Decoding Diverse Solutions from Neural Sequence Models"
(AAAI 2018), section 4: the ``num_beams`` beams of a prompt are split into ``G = num_beam_groups``
groups of ``num_beams / G`` beams, decoded in turn at every step. Group ``g`` sees the tokens the
groups ``0 .. g-1`` chose *at this step*, and each token ``v`` loses ``diversity_penalty`` times the
number of times they chose it (the Hamming diversity term, with weight lambda):

    scores[r, v] -= diversity_penalty * #{beams of groups < g of r's prompt that chose v at this step}

The group loop (:mod:`decoding.strategies.beam.groups`) tells the processor, before each group,
which group it is and what the earlier groups chose (:meth:`HammingDiversityLogitsProcessor.set_group`):
its state lives for one group of one step. The processor sees every row ``[B * num_beams]`` and
changes only the rows of the current group.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import LogitsProcessor


class HammingDiversityLogitsProcessor(LogitsProcessor):
    """Subtract ``diversity_penalty`` per earlier-group beam that chose the same token at this step.

    Args:
        diversity_penalty: lambda, > 0.
        num_beams: beams per prompt (rows ``b * num_beams + j``).
        num_beam_groups: G, dividing ``num_beams``; group ``g`` holds beams ``g * num_beams / G`` onwards.
    """

    name = "diversity_penalty"

    def __init__(self, diversity_penalty: float, num_beams: int, num_beam_groups: int):
        if isinstance(diversity_penalty, bool) or not isinstance(diversity_penalty, (int, float)) \
                or not diversity_penalty > 0.0:
            raise ValueError(f"`diversity_penalty` must be a number > 0, but is {diversity_penalty!r}.")
        if num_beam_groups < 2 or num_beams % num_beam_groups != 0:
            raise ValueError(f"`num_beam_groups` ({num_beam_groups}) must be >= 2 and divide `num_beams` "
                             f"({num_beams}).")
        self.diversity_penalty = float(diversity_penalty)
        self.num_beams = num_beams
        self.num_beam_groups = num_beam_groups
        self.group_size = num_beams // num_beam_groups
        self.group: Optional[int] = None
        self.current_tokens: Optional[torch.LongTensor] = None

    def reset(self) -> None:
        self.group, self.current_tokens = None, None

    def set_group(self, group: int, current_tokens: torch.LongTensor) -> None:
        """Group ``group`` is next; ``current_tokens`` ``[B * num_beams]`` int64 holds this step's tokens of
        the groups before it (the other entries are not read)."""
        self.group, self.current_tokens = group, current_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.group is None:
            raise RuntimeError("HammingDiversityLogitsProcessor is driven by group beam search (set_group before "
                               "each group); use it through generate(num_beam_groups=..., diversity_penalty=...).")
        if self.group == 0:
            return scores
        rows, vocab = scores.shape
        batch, start = rows // self.num_beams, self.group * self.group_size
        earlier = self.current_tokens.view(batch, self.num_beams)[:, :start]                 # [B, g * size]
        counts = torch.zeros(batch, vocab, dtype=torch.long, device=scores.device)
        counts.scatter_add_(1, earlier, torch.ones_like(earlier))                           # [B, V]
        penalised = scores.clone().view(batch, self.num_beams, vocab)
        penalised[:, start:start + self.group_size] -= self.diversity_penalty * counts[:, None, :]
        return penalised.view(rows, vocab)
