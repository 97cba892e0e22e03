"""Repetition penalties: scale down (or up) the scores of tokens already seen.

Both follow CTRL (Keskar et al., 2019, "CTRL: A Conditional Transformer Language Model for
Controllable Generation"): a seen token's score ``s`` becomes ``s * p`` when ``s < 0`` and ``s / p``
otherwise, so ``p > 1`` always makes it less likely and ``p < 1`` more likely. Each distinct token is
scaled once, however often it occurs.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

from .base import LogitsProcessor


def _check_penalty(penalty: float, name: str) -> float:
    if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not (
            math.isfinite(penalty) and penalty > 0):
        raise ValueError(f"`{name}` has to be a finite number > 0 (1.0 disables it), but is {penalty!r}.")
    return float(penalty)


def _penalise(scores: torch.Tensor, token_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """``scores`` with the columns ``token_ids`` ([rows, n] int64) scaled: ``s * p if s < 0 else s / p``."""
    picked = torch.gather(scores, 1, token_ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, token_ids, picked)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Penalise every token of ``input_ids`` (prompt and generated): ``s * p if s < 0 else s / p``.

    Args:
        penalty: a number > 0; > 1 discourages repeats, < 1 encourages them (an int is accepted
            and converted, unlike the reference).
        prompt_ignore_length: positions to leave out of the history: an int (the same for every
            row), a ``[rows]`` int64 tensor (per row: ``generate`` passes each row's left-padding
            length), or None (the whole sequence counts, pads included).

    ``scores``: ``[rows, vocab]`` float32; ``input_ids``: ``[rows, len]`` int64.
    """

    name = "repetition_penalty"

    def __init__(self, penalty: float, prompt_ignore_length: Optional[Union[int, torch.Tensor]] = None):
        self.penalty = _check_penalty(penalty, "repetition_penalty")
        if isinstance(prompt_ignore_length, torch.Tensor):
            if prompt_ignore_length.dim() != 1:
                raise ValueError("`prompt_ignore_length` has to be an int or a 1-D [rows] tensor, "
                                 f"but has shape {tuple(prompt_ignore_length.shape)}.")
        elif prompt_ignore_length is not None and (not isinstance(prompt_ignore_length, int)
                                                   or prompt_ignore_length < 0):
            raise ValueError(f"`prompt_ignore_length` has to be an int >= 0, but is {prompt_ignore_length!r}.")
        self.prompt_ignore_length = prompt_ignore_length

    @property
    def position_dependent(self) -> bool:
        """With ``prompt_ignore_length`` it reads where each row's history starts; without, only the row's tokens."""
        return self.prompt_ignore_length is not None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            input_ids = input_ids[:, ignore:]
        elif ignore is not None:
            if ignore.shape[0] != input_ids.shape[0]:
                raise ValueError(f"`prompt_ignore_length` has {ignore.shape[0]} rows but input_ids has "
                                 f"{input_ids.shape[0]}.")
            ignore = ignore.to(input_ids.device)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            # ignored positions point at a dummy column `vocab`, dropped below
            input_ids = input_ids.masked_fill(positions[None, :] < ignore[:, None], vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        return _penalise(padded, input_ids.clamp(max=vocab), self.penalty)[..., :vocab]


class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Boost the prompt's tokens (hallucination penalty): CTRL's rule with ``1 / p``.

    ``generate`` applies it to decoder-only models too, over the prompt as given (left pads
    included), repeated for the ``num_return_sequences`` rows of each prompt.

    Args:
        penalty: a number > 0; > 1 favours tokens of the prompt, < 1 disfavours them.
        encoder_input_ids: ``[batch, prompt_len]`` int64, the prompt before row expansion.
    """

    name = "encoder_repetition_penalty"

    def __init__(self, penalty: float, encoder_input_ids: torch.LongTensor):
        # reference quirk: the inverse is stored, then applied with the repetition penalty's rule (same bits).
        self.penalty = 1 / _check_penalty(penalty, "encoder_repetition_penalty")
        self.encoder_input_ids = encoder_input_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        prompt = self.encoder_input_ids.to(scores.device)
        if scores.shape[0] > prompt.shape[0]:
            prompt = prompt.repeat_interleave(scores.shape[0] // prompt.shape[0], dim=0)
        return _penalise(scores, prompt, self.penalty)
