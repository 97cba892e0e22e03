"""Streaming with beams.

The reference refuses a streamer with beam search (``ValueError: streamer cannot be used with beam
search (yet!)``; its issue #35451 asks for it) and, with beam sampling, silently never calls
``end()``. `decoding` streams beams in two ways:

- A **beam streamer** (any object with ``on_step``; subclass :class:`BeamStreamer`) receives, after
  every step, every live beam of every prompt (its generated ids, its score and the beam it
  extends), then the returned sequences and their scores at the end.
- A **plain streamer** (``put`` / ``end``, e.g. ``TextStreamer``) receives the prompt ``[B, P]``
  (one row per prompt, not per beam) when the search starts, then, once the search is over, the
  new tokens of each prompt's best sequence, one ``[B]`` tensor per position, then ``end()``.
  Beam search cannot know its best sequence before it ends, so nothing arrives in between. This
  is a deliberate difference from the reference (docs/api.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, TextIO

import torch

from .search import BeamStep


@dataclass(frozen=True)
class LiveBeam:
    """One running beam after a step.

    Attributes:
        prompt: index of its prompt in the batch.
        slot: its place among the prompt's running beams (0 is the best running score).
        ids: the generated token ids so far (the prompt excluded).
        score: the sum of the processed log-probs of ``ids`` (not length-normalised).
        parent: the slot, at the previous step, of the beam it extends (at step 0 every beam
            extends slot 0, the prompt).
    """

    prompt: int
    slot: int
    ids: list[int]
    score: float
    parent: int


class BeamStreamer:
    """Base class of beam streamers: override ``on_step`` and ``on_finish``.

    ``on_step(step, beams)`` is called after each step: ``step`` is the index of the token just
    chosen (0 for the first) and ``beams[b]`` the live beams of prompt ``b``, best first. A beam is
    live when it did not just finish and its prompt's search is not over (a prompt whose finished
    hypotheses can no longer be beaten gets an empty list; its rows keep running in the batch, as in
    the reference, but cannot change the result).

    ``on_finish(sequences, scores)`` is called once: ``sequences`` ``[B * nrs, P + g]`` int64 (what
    ``generate`` returns) and ``scores`` ``[B * nrs]`` float32, their length-normalised scores.
    """

    def on_step(self, step: int, beams: list[list[LiveBeam]]) -> None:
        pass

    def on_finish(self, sequences: torch.LongTensor, scores: torch.FloatTensor) -> None:
        pass


def is_beam_streamer(streamer: Any) -> bool:
    """True for objects with ``on_step`` (beam streamers); plain streamers have only ``put``/``end``."""
    return streamer is not None and callable(getattr(streamer, "on_step", None))


def live_beams(step: BeamStep, early_stopping: Any) -> list[list[LiveBeam]]:
    """The live beams of every prompt after ``step`` (one host transfer of the running beams)."""
    state = step.state
    finished = torch.take_along_dim(step.candidates.finished, step.running_choice, dim=1)
    parents = torch.take_along_dim(step.candidates.parents, step.running_choice, dim=1)
    full = state.is_finished.all(-1, keepdim=True) & (early_stopping is True)
    open_prompt = (state.can_improve & ~full).squeeze(1).tolist()
    ids = state.running_ids[:, :, state.prompt_length:state.length].tolist()
    scores, parents, finished = state.running_scores.tolist(), parents.tolist(), finished.tolist()
    return [[LiveBeam(b, j, ids[b][j], scores[b][j], parents[b][j])
             for j in range(len(ids[b])) if not finished[b][j]] if open_prompt[b] else []
            for b in range(len(ids))]


class BeamStreamAdapter:
    """Turns the loop's :class:`BeamStep` into ``streamer.on_step(step, beams)`` calls."""

    def __init__(self, streamer: Any, early_stopping: Any):
        self.streamer = streamer
        self.early_stopping = early_stopping

    def __call__(self, step: BeamStep) -> None:
        self.streamer.on_step(step.step, live_beams(step, self.early_stopping))


def stream_best(streamer: Any, sequences: torch.LongTensor, beam_indices: torch.Tensor, prompt_length: int,
                num_return_sequences: int) -> None:
    """Give a plain streamer each prompt's best sequence: one ``[B]`` put per new position, then ``end()``.

    ``sequences``: ``[B * nrs, P + g]`` and ``beam_indices`` ``[B * nrs, g]`` as returned; the best
    hypothesis of prompt ``b`` is row ``b * nrs``. The stream covers the longest of the best
    hypotheses; a shorter one is followed by the fill value there, as in the returned sequences.
    """
    best = sequences[::num_return_sequences, prompt_length:].cpu()                          # [B, g]
    length = int((beam_indices[::num_return_sequences] >= 0).sum(dim=1).max()) if best.shape[1] else 0
    for position in range(length):
        streamer.put(best[:, position])
    streamer.end()


class BeamTextStreamer(BeamStreamer):
    """Print the live beams of one prompt as text after each step, then its best hypothesis.

    Args:
        tokenizer: anything with ``decode(list[int], **kwargs) -> str``.
        prompt: which prompt of the batch to show.
        file: where to write (default ``sys.stdout``).
        **decode_kwargs: passed to ``tokenizer.decode``.
    """

    def __init__(self, tokenizer: Any, prompt: int = 0, file: Optional[TextIO] = None, **decode_kwargs: Any):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.file = file
        self.decode_kwargs = decode_kwargs
        self._prompts = 1

    def _write(self, text: str) -> None:
        out = self.file if self.file is not None else sys.stdout
        out.write(text)
        out.flush()

    def on_step(self, step: int, beams: list[list[LiveBeam]]) -> None:
        self._prompts = len(beams)
        lines = [f"step {step}:"]
        for beam in beams[self.prompt]:
            text = self.tokenizer.decode(beam.ids, **self.decode_kwargs)
            lines.append(f"  beam {beam.slot} (from {beam.parent}) {beam.score:9.3f}  {text!r}")
        self._write("\n".join(lines) + "\n")

    def on_finish(self, sequences: torch.LongTensor, scores: torch.FloatTensor) -> None:
        row = self.prompt * (sequences.shape[0] // self._prompts)
        ids = [i for i in sequences[row].tolist() if i >= 0]
        self._write(f"best ({float(scores[row]):.3f}): {self.tokenizer.decode(ids, **self.decode_kwargs)!r}\n")
