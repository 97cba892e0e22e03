"""Drafters: who proposes the tokens that the target model verifies in speculative decoding.

One interface, three proposers:

- :class:`DraftModel` (``assistant_model=``): a smaller model with the same vocabulary drafts
  token by token with its own KV cache.
- :class:`EarlyExit` (``assistant_early_exit=k``): the target itself, run through its first ``k``
  layers and its own head, with a second cache. No second model.
- :class:`PromptLookup` (``prompt_lookup_num_tokens=``): no model at all; the draft is copied from
  the sequence itself, after an earlier occurrence of its last n-gram.

Each one :meth:`Drafter.propose` s up to ``limit[r]`` tokens for every row and is told by
:meth:`Drafter.accepted` how many of them the target kept, so it can adjust its schedule.
They follow the candidate generators of ``transformers`` 5.23 (``generation/candidate_generator.py``):
same number of tokens per round, same stopping rules, same random draws.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from .block_runner import BlockRunner
from ...inputs import infer_attention_mask
from ...processors import LogitsProcessorList, build_pipeline
from .ragged import RaggedSequences
from ...errors import require_finite_scores
from ...seeding import seeded_multinomial


@dataclass
class Draft:
    """What a drafter proposes for one round.

    Attributes:
        tokens: ``[rows, gamma]`` int64; row ``r``'s draft is ``tokens[r, :counts[r]]`` (the rest is filler).
        counts: ``[rows]`` int64, how many tokens each row proposes (0 is allowed).
        scores: ``[rows, gamma, vocab]`` float32, the drafter's processed scores for each drafted
            token (its distribution ``q`` is their softmax), or None for a drafter without a model.
    """

    tokens: torch.LongTensor
    counts: torch.LongTensor
    scores: Optional[torch.FloatTensor] = None

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    @staticmethod
    def empty(rows: int, device: torch.device) -> "Draft":
        return Draft(torch.zeros(rows, 0, dtype=torch.long, device=device),
                     torch.zeros(rows, dtype=torch.long, device=device))


class Drafter:
    """The interface. Subclasses implement :meth:`propose`; the others are optional."""

    name = "drafter"

    def propose(self, sequences: RaggedSequences, limit: torch.LongTensor) -> Draft:
        """Propose at most ``limit[r]`` tokens (``[rows]`` int64) to follow each row of ``sequences``."""
        raise NotImplementedError

    def accepted(self, draft: Draft, accepted: torch.LongTensor, active: torch.BoolTensor) -> None:
        """The target kept ``accepted[r]`` of row ``r``'s drafted tokens (``active``: rows not finished)."""

    def finish(self) -> None:
        """Called once when generation ends."""


class DraftModel(Drafter):
    """Draft with a second causal LM that shares the target's vocabulary.

    Each round, as the reference's ``AssistedCandidateGenerator``:

    1. the first round feeds the whole prompt; later rounds cut the draft cache back to all but the
       last two tokens of the sequence and feed those two (the reference re-reads the last accepted
       token together with the target's new token);
    2. then it drafts one token per forward: ``processors`` on the logits, argmax (greedy) or one
       ``torch.multinomial`` draw (sampling), until ``num_tokens`` are drafted, the length limit is
       reached, the token is an eos, or (``confidence_threshold``) its probability under the processed
       scores is below the threshold; that last token stays in the draft;
    3. the ``"heuristic"`` schedules add 2 to ``num_tokens`` when every draft was accepted and take 1
       away (never below 1) otherwise; ``"constant"`` keeps it.

    Args:
        model: the draft model (in ``.eval()`` mode).
        prompt_mask: ``[rows, prompt_len]`` attention mask of the prompt.
        processors: the pipeline applied to the draft's logits (see :func:`draft_pipeline`).
        do_sample: draw instead of argmax.
        eos_token_ids: ``[n_eos]`` int64 or None (the target's eos).
        num_tokens, schedule, confidence_threshold: the schedule (the reference's
            ``num_assistant_tokens``, ``num_assistant_tokens_schedule``, ``assistant_confidence_threshold``).
        write_back: a generation config whose ``num_assistant_tokens`` receives the final value when the
            schedule is ``"heuristic"`` (the reference writes it back to the assistant's config).
        infer_mask_pad: ``(pad, eos)`` to copy a quirk of the reference at batch size 1 when the prompt has
            no padding: its assistant's ``generate`` infers an attention mask from the sequence every
            round, so a token equal to the pad id (not an eos) is masked out *for the draft*. None: no quirk.
        seeds: with ``do_sample`` and ``generate(seed=...)``, one seed per row: the token drafted at
            new-token index ``t`` is ``seeded_multinomial(softmax(scores), [seeds[r]], [t])``, the same
            noise the target's seeded draw at ``t`` uses, so where the draft's distribution is close
            to the target's it picks the target's token (coupling; see docs/speculative.md).
    """

    name = "draft model"

    def __init__(self, model: Any, prompt_mask: torch.Tensor, processors: LogitsProcessorList, do_sample: bool,
                 eos_token_ids: Optional[torch.Tensor], num_tokens: int = 20, schedule: str = "constant",
                 confidence_threshold: Optional[float] = 0.4, write_back: Any = None,
                 infer_mask_pad: Optional[tuple] = None, seeds: Optional[list[int]] = None):
        self.model = model
        self.seeds = seeds
        self.prompt_mask = prompt_mask
        self.processors = processors
        self.do_sample = do_sample
        self.eos = eos_token_ids
        self.num_tokens = int(num_tokens)
        self.schedule = schedule
        self.confidence_threshold = confidence_threshold
        self.write_back = write_back
        self.infer_mask_pad = infer_mask_pad
        self.runner: Optional[BlockRunner] = None

    @contextlib.contextmanager
    def _model_view(self) -> Iterator[None]:
        """The context every draft forward runs in (the whole model here; see :class:`EarlyExit`)."""
        yield

    def propose(self, sequences: RaggedSequences, limit: torch.LongTensor) -> Draft:
        caps = limit.clamp(min=0).clamp(max=self.num_tokens)                # [rows]
        gamma = int(caps.max())
        if gamma == 0:
            return Draft.empty(sequences.rows, limit.device)
        with self._model_view():
            if self.runner is None:
                self.runner = BlockRunner(self.model, self.prompt_mask, output_device=limit.device,
                                          who="the draft model")
                mask = self._inferred_mask(sequences)
                logits = self.runner.forward(sequences.buffer[:, :sequences.prompt_length], first=True,
                                             attention_mask=mask)[:, -1]
            else:
                self.runner.truncate(sequences.lengths - 2)
                mask = self._inferred_mask(sequences)
                logits = self.runner.forward(sequences.last(2), attention_mask=mask)[:, -1]
            tokens, scores = [], []
            counts = torch.zeros_like(caps)
            drafting = caps > 0
            for j in range(gamma):
                drafted = torch.stack(tokens, 1) if tokens else None
                step_scores = self.processors(sequences.aligned(drafted, counts), logits)   # [rows, vocab]
                if self.do_sample and self.seeds is not None:
                    token = self._seeded_draw(step_scores, sequences.lengths - sequences.prompt_length + j, drafting)
                elif self.do_sample:
                    require_finite_scores(step_scores)
                    token = torch.multinomial(torch.softmax(step_scores, -1), num_samples=1).squeeze(1)
                else:
                    token = step_scores.argmax(-1)
                tokens.append(token)
                scores.append(step_scores)
                counts = counts + drafting.long()
                stop = j + 1 >= caps
                if self.eos is not None:
                    stop = stop | torch.isin(token, self.eos)
                if self.confidence_threshold:
                    confidence = torch.softmax(step_scores, -1).gather(1, token[:, None]).squeeze(1)
                    stop = stop | (confidence < self.confidence_threshold)
                drafting = drafting & ~stop
                if not bool(drafting.any()):
                    break
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                logits = self.runner.forward(token[:, None], attention_mask=mask)[:, -1]
        return Draft(torch.stack(tokens, 1), counts, torch.stack(scores, 1))

    def _seeded_draw(self, scores: torch.FloatTensor, steps: torch.LongTensor,
                     drafting: torch.BoolTensor) -> torch.LongTensor:
        """Draft tokens ``[rows]`` int64 from ``scores`` ``[rows, vocab]`` keyed by ``(seeds[r], steps[r])``.

        Only the rows still drafting draw; the others get a filler (their argmax) that is never proposed.
        """
        token = scores.argmax(-1)
        rows = drafting.nonzero().flatten()
        index = rows.tolist()
        require_finite_scores(scores[rows])
        token[rows] = seeded_multinomial(torch.softmax(scores[rows], -1), [self.seeds[r] for r in index],
                                         steps[rows].tolist())
        return token

    def _inferred_mask(self, sequences: RaggedSequences) -> Optional[torch.Tensor]:
        """The mask the reference's assistant infers from the whole sequence (None when all ones)."""
        if self.infer_mask_pad is None:
            return None
        # reference quirk: at batch size 1 the assistant infers its mask from the sequence, masking pad-id tokens.
        pad, eos = self.infer_mask_pad
        mask = infer_attention_mask(sequences.aligned(), pad, eos)
        return None if bool((mask == 1).all()) else mask

    def accepted(self, draft: Draft, accepted: torch.LongTensor, active: torch.BoolTensor) -> None:
        if self.schedule in ("heuristic", "heuristic_transient"):
            if bool((accepted == draft.counts)[active].all()):
                self.num_tokens += 2
            else:
                self.num_tokens = max(1, self.num_tokens - 1)

    def finish(self) -> None:
        # reference quirk: the heuristic schedule's last value is written back to the drafter's generation_config.
        if self.schedule == "heuristic" and self.write_back is not None:
            self.write_back.num_assistant_tokens = self.num_tokens

    @property
    def forwards(self) -> int:
        return self.runner.forwards if self.runner is not None else 0


class EarlyExit(DraftModel):
    """Self-speculative decoding: the target's first ``layers`` layers and its own head draft.

    Like the reference's ``EarlyExitCandidateGenerator`` (written for LayerSkip models), the draft
    forwards run with ``config.num_hidden_layers`` of the target's base model set to ``layers``;
    models whose forward loops over ``self.layers[: config.num_hidden_layers]`` (Llama, Mistral,
    Qwen2, Gemma, Gemma2, Phi-3, ...) then stop after those layers and apply their final norm and head.
    The draft keeps its own cache (with ``layers`` layers). Other arguments as :class:`DraftModel`.
    """

    name = "early exit"

    def __init__(self, model: Any, layers: int, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        self.layers = int(layers)

    @contextlib.contextmanager
    def _model_view(self) -> Iterator[None]:
        base = getattr(self.model, self.model.base_model_prefix, self.model)
        full = base.config.num_hidden_layers
        base.config.num_hidden_layers = self.layers
        try:
            yield
        finally:
            base.config.num_hidden_layers = full


class PromptLookup(Drafter):
    """Prompt lookup decoding: copy the draft from an earlier occurrence of the last n-gram.

    For ``n`` from ``min(max_ngram, length - 1)`` down to 1, the last ``n`` tokens are searched in the
    sequence (prompt and generated tokens) from left to right; the first occurrence followed by at
    least one token gives the draft: up to ``num_tokens`` tokens after it. As in the reference:

    - a drafted token is dropped, with all after it, if ``processors`` give it ``-inf`` (or the float32
      minimum) on all-ones scores (a banned token); an emptied draft moves on to the next occurrence;
    - the draft is cut before its first eos, and a draft emptied that way ends the search;
    - nothing is proposed when only one more token fits (``limit`` 0).

    Args:
        num_tokens: ``prompt_lookup_num_tokens``.
        max_ngram: ``max_matching_ngram_size`` (the reference's default is 2).
        max_length: the absolute length limit (the reference caps the copied span's end index by it).
        processors: the target's pipeline, for the banned-token check.
        eos_token_ids: ``[n_eos]`` int64 or None.
        vocab_size: width of the all-ones scores.
    """

    name = "prompt lookup"

    def __init__(self, num_tokens: int, max_ngram: int, max_length: int, processors: LogitsProcessorList,
                 eos_token_ids: Optional[torch.Tensor], vocab_size: int):
        self.num_tokens = int(num_tokens)
        self.max_ngram = int(max_ngram)
        self.max_length = int(max_length)
        self.processors = processors
        self.eos = eos_token_ids
        self.vocab_size = int(vocab_size)

    def _allowed_prefix(self, sequence: torch.LongTensor, chosen: torch.LongTensor) -> torch.LongTensor:
        """``chosen`` cut before its first token that the processors ban after ``sequence``."""
        if len(self.processors) == 0:
            return chosen
        ones = torch.ones(1, self.vocab_size, dtype=torch.float32, device=sequence.device)
        lowest = torch.finfo(torch.float32).min
        for i in range(chosen.shape[0]):
            context = torch.cat([sequence, chosen[:i]])[None, :]
            value = float(self.processors(context, ones)[0, chosen[i]])
            if value == float("-inf") or value == lowest:
                return chosen[:i]
        return chosen

    def _lookup(self, sequence: torch.LongTensor) -> torch.LongTensor:
        """The draft for one row's ``sequence`` ``[length]`` (possibly empty)."""
        length = sequence.shape[0]
        for n in range(min(self.max_ngram, length - 1), 0, -1):
            windows = sequence.unfold(0, n, 1)                                # [length - n + 1, n]
            starts = (windows == sequence[-n:]).all(-1).nonzero().flatten().tolist()
            for start in starts:
                begin, end = start + n, min(start + n + self.num_tokens, length, self.max_length)
                if begin >= end:
                    continue
                chosen = self._allowed_prefix(sequence, sequence[begin:end])
                if chosen.shape[0] == 0:
                    continue
                if self.eos is not None:
                    is_eos = torch.isin(chosen, self.eos).nonzero()
                    if is_eos.numel():
                        chosen = chosen[:int(is_eos[0])]
                return chosen
        return sequence[:0]

    def propose(self, sequences: RaggedSequences, limit: torch.LongTensor) -> Draft:
        drafts = [self._lookup(sequences.row(r)) if int(limit[r]) > 0 else sequences.row(r)[:0]
                  for r in range(sequences.rows)]
        counts = torch.tensor([d.shape[0] for d in drafts], dtype=torch.long, device=limit.device)
        tokens = torch.zeros(sequences.rows, int(counts.max()), dtype=torch.long, device=limit.device)
        for r, d in enumerate(drafts):
            tokens[r, :d.shape[0]] = d
        return Draft(tokens, counts)


def draft_pipeline(settings: Any, context: Any, target_processors: LogitsProcessorList) -> LogitsProcessorList:
    """The processors a draft model applies, as the reference builds them for its assistant.

    The reference calls ``assistant.generate`` with a copy of the target's settings *and* the target's
    finished processor list (minus ``MinLengthLogitsProcessor``). Its processor builder merges that list
    as user processors and then appends the sampling warpers again, so when sampling the draft applies
    temperature, top-k and top-p twice. Copying that keeps the draft's draws, and so the tokens, equal
    to the reference's; the acceptance rule is exact whatever the draft's distribution is.
    """
    # reference quirk: the draft applies the target's pipeline, then the sampling warpers a second time.
    user = [p for p in target_processors if type(p).__name__ != "MinLengthLogitsProcessor"]
    return build_pipeline(settings, context, user)
