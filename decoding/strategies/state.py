"""What every strategy shares: the growing sequences, finished rows, recorded scores, streaming.

A strategy decides *which* token each row takes; :class:`SequenceState` does the rest the way
the reference does it, in its order: pad the finished rows, append, run the stopping criteria,
stream the new tokens.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..outputs import GenerateOutput
from ..runner import widened
from ..stopping import StoppingCriteriaList
from ..versions import CACHE_KEYWORD


class StepOutputs:
    """What ``return_dict_in_generate`` asks to keep, one entry per step; a list is None when not asked for.

    Attributes:
        scores: processed scores, each ``[rows, vocab]`` float32.
        logits: raw logits, each ``[rows, vocab]`` float32.
        attentions / hidden_states: the model's, per step, as it returned them.
    """

    def __init__(self, output_scores: bool = False, output_logits: bool = False,
                 output_attentions: bool = False, output_hidden_states: bool = False):
        self.scores: Optional[list] = [] if output_scores else None
        self.logits: Optional[list] = [] if output_logits else None
        self.attentions: Optional[list] = [] if output_attentions else None
        self.hidden_states: Optional[list] = [] if output_hidden_states else None

    def record(self, logits: torch.FloatTensor, scores: torch.FloatTensor, model_output: Any = None) -> None:
        """Keep this step's raw logits, processed scores (and attentions, hidden states) when asked for."""
        if self.scores is not None:
            self.scores.append(scores)
        if self.logits is not None:
            self.logits.append(logits)
        if self.attentions is not None:
            self.attentions.append(model_output.attentions)
        if self.hidden_states is not None:
            self.hidden_states.append(model_output.hidden_states)

    def scores_so_far(self) -> Optional[tuple]:
        """What stopping criteria receive as ``scores``: the recorded scores, or None (the reference's rule)."""
        return tuple(self.scores) if self.scores is not None else None


class SequenceState(StepOutputs):
    """Sequences ``[rows, length]`` int64 plus per-row done flags, scores and logits per step.

    Args:
        prompt_ids: ``[rows, prompt_len]`` int64 (expanded, left-padded).
        criteria: the stopping criteria; a row is done once any of them says so.
        pad_token_id: written instead of the chosen token in finished rows, when some criterion
            has an ``eos_token_id`` (the reference's rule).
        streamer: gets the prompt now, each step's tokens in ``append``, and ``end()`` in ``finish``.
        output_scores / output_logits: record the processed scores / raw logits of every step.
        capacity: initial width of the token buffer; it doubles whenever it is full, so memory follows
            the tokens generated, never ``max_length``.
        limit: the width the buffer need never pass (the call's ``max_length``): a doubling stops there
            (appending past it still works, one more doubling at a time).
    """

    def __init__(self, prompt_ids: torch.LongTensor, criteria: StoppingCriteriaList,
                 pad_token_id: Optional[torch.Tensor], streamer: Any = None,
                 output_scores: bool = False, output_logits: bool = False, capacity: int = 0,
                 output_attentions: bool = False, output_hidden_states: bool = False,
                 limit: Optional[int] = None):
        rows, prompt_len = prompt_ids.shape
        self.limit = limit
        self._buffer = prompt_ids.new_empty(rows, max(capacity, prompt_len + 1))
        self._buffer[:, :prompt_len] = prompt_ids
        self.length = prompt_len
        self.prompt_length = prompt_len
        self.criteria = criteria
        # reference quirk: finished rows are padded only when some criterion (a user's too) has an eos_token_id.
        self.pad_token_id = pad_token_id if criteria.pads_finished_rows else None
        self.streamer = streamer
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=prompt_ids.device)
        self.done = False
        self.observer: Any = None       # a tracer (decoding.insight.trace): told of each step's tokens
        super().__init__(output_scores, output_logits, output_attentions, output_hidden_states)
        if streamer is not None:
            streamer.put(prompt_ids.cpu())

    @property
    def sequences(self) -> torch.LongTensor:
        """``[rows, length]``: the prompt and every token appended so far."""
        return self._buffer[:, :self.length]

    def append(self, tokens: torch.LongTensor) -> torch.LongTensor:
        """Append one token per row (``[rows]`` int64); returns the tokens written (pads included)."""
        if self.observer is not None:
            self.observer.appended(self, tokens)
        if self.pad_token_id is not None:
            tokens = torch.where(self.unfinished, tokens, self.pad_token_id)
        limit = self.limit if self.limit is not None and self.limit > self.length else 2 * self.length
        self._buffer = widened(self._buffer, self.length + 1, limit, 0)    # doubles when full, up to limit
        self._buffer[:, self.length] = tokens
        self.length += 1
        self.unfinished &= ~self.criteria(self.sequences, self.scores_so_far())
        if self.streamer is not None:
            self.streamer.put(tokens.cpu())
        self.done = not bool(self.unfinished.any())
        return tokens

    def finish(self, return_dict: bool, cache: Any = None, **extra: Any):
        """End the stream and build the result: a LongTensor, or a :class:`GenerateOutput`."""
        if self.streamer is not None:
            self.streamer.end()
        sequences = self.sequences.clone()
        if not return_dict:
            return sequences
        return GenerateOutput(
            sequences=sequences,
            scores=tuple(self.scores) if self.scores is not None else None,
            logits=tuple(self.logits) if self.logits is not None else None,
            attentions=tuple(self.attentions) if self.attentions is not None else None,
            hidden_states=tuple(self.hidden_states) if self.hidden_states is not None else None,
            **{CACHE_KEYWORD: cache}, **extra)   # the output field's name in the installed release
