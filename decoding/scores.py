"""Per-token scores of returned sequences: what the reference's ``model.compute_transition_scores`` gives.

After ``generate(..., return_dict_in_generate=True, output_scores=True)``, ``out.scores[t]`` holds
the processed scores of step ``t`` for every row that was running then (``[rows, vocab]``), and
the returned ``out.sequences`` hold the chosen tokens. For greedy search and sampling, returned row
``i`` is running row ``i``. With beams the rows were reordered at every step, so
``out.beam_indices[i, t]`` says which running row token ``t`` of returned sequence ``i`` came from
(-1 once that hypothesis had ended).

The transition score of token ``t`` of sequence ``i`` is then::

    out.scores[t][beam_indices[i, t], sequences[i, -g + t]]        (0.0 where beam_indices[i, t] < 0)

with ``g`` the number of generated tokens (the new tokens are the last ``g`` of each row). With beam
search, ``transition_scores.sum(-1) / g_i ** length_penalty`` is ``out.sequences_scores`` (``g_i``
the row's own length), because the beam scores are sums of these processed log-probs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def compute_transition_scores(sequences: torch.LongTensor, scores: Sequence[torch.FloatTensor],
                              beam_indices: Optional[torch.Tensor] = None,
                              normalize_logits: bool = False) -> torch.FloatTensor:
    """The score each step gave to the token a returned sequence took there.

    Args:
        sequences: ``[rows, prompt_len + g']`` int64, ``out.sequences``.
        scores: ``out.scores`` (or ``out.logits``): ``steps`` tensors ``[running_rows, vocab]`` float32.
        beam_indices: ``[rows, g]`` int, ``out.beam_indices`` for beam search / beam sampling; None
            for greedy search and sampling (returned row ``i`` is running row ``i`` at every step).
        normalize_logits: apply ``log_softmax`` over the vocabulary to each step's scores first
            (turns raw ``out.logits`` into log-probabilities).

    Returns:
        ``[rows, g]`` float32, ``g`` the longest returned hypothesis (``steps`` without beams); 0.0
        where a hypothesis had already ended (``beam_indices < 0``).

    Raises:
        ValueError: ``scores`` is empty, or ``sequences`` is shorter than the generated part.
    """
    if len(scores) == 0:
        raise ValueError("`scores` is empty; generate with return_dict_in_generate=True and output_scores=True "
                         "(or output_logits=True) and pass out.scores (or out.logits).")
    steps = torch.stack(tuple(scores), dim=0)                                     # [steps, running_rows, vocab]
    if normalize_logits:
        steps = torch.log_softmax(steps, dim=-1)
    if beam_indices is None:
        running_rows = torch.arange(steps.shape[1], device=sequences.device)
        beam_indices = running_rows[:, None].expand(-1, steps.shape[0])              # [rows, steps]
    ended = beam_indices < 0                                                        # [rows, g]
    generated = int((~ended).sum(-1).max())
    if generated > sequences.shape[-1]:
        raise ValueError(f"`sequences` has {sequences.shape[-1]} tokens per row but `beam_indices` says "
                         f"{generated} were generated; pass out.sequences with its out.beam_indices.")
    ended = ended[:, :generated]
    rows = beam_indices[:, :generated].long().masked_fill(ended, 0)                  # [rows, g]
    tokens = sequences[:, sequences.shape[-1] - generated:].masked_fill(ended, 0)   # [rows, g]
    step_index = torch.arange(generated, device=sequences.device)[None, :].expand_as(rows)
    transition = steps.to(sequences.device)[step_index, rows, tokens]               # [rows, g]
    return transition.masked_fill(ended, 0.0)
