"""Speculative decoding: a drafter proposes tokens, the target checks them all in one forward pass.

Each round (read top to bottom in :func:`speculative_decoding`):

1. **propose**: the drafter proposes up to ``gamma`` tokens per row (:mod:`.drafters`);
2. **verify**: one target forward over ``[last token, drafts...]`` (the first round: the whole
   prompt and the drafts) gives ``gamma + 1`` next-token logits per row; the processors run on each
   position with the sequence as it would be at that position;
3. **accept**: greedy keeps the drafts up to the first one that differs from the target's argmax,
   plus the target's own token at that point (:func:`accept_greedy`); sampling with a draft model
   uses the speculative-sampling rule (:func:`accept_speculative_sampling`); sampling without draft
   probabilities (prompt lookup) draws the target's token at every position and keeps the matches;
   sampling with ``seed=`` uses the greedy rule with the row's seeded draw in place of the argmax
   (:func:`seeded_target_tokens`), so the tokens are those of plain seeded sampling;
4. **trim**: the accepted tokens are cut at the length limit and after the first eos; the target's
   cache drops the rejected tokens; the drafter is told how many it got right;
5. **stop**: the stopping criteria run once per round on the whole sequence.

Every row accepts its own number of tokens: rows of different lengths share one cache, a row that
kept fewer tokens than another gets masked holes (:mod:`.block_runner`). With one row
everything above is what ``model.generate(assistant_model=... | prompt_lookup_num_tokens=... |
assistant_early_exit=...)`` does, random draws included; the reference refuses more than one row.
See docs/speculative.md for why the acceptance rules are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .block_runner import BlockRunner
from .drafters import Draft, Drafter
from ...processors import LogitsProcessorList
from .ragged import RaggedSequences
from ...errors import require_finite_scores
from ...seeding import seeded_multinomial
from ...stopping import StoppingCriteriaList
from ..state import StepOutputs


@dataclass
class SpeculationStats:
    """What speculation did, round by round (``GenerateOutput.trace["speculation"]``).

    Attributes:
        drafter: the drafter's name (``"draft model"``, ``"early exit"``, ``"prompt lookup"``).
        proposed: per round, the number of drafted tokens of each row (a list of ``rows`` ints).
        accepted: per round, how many of them the target kept (after the length and eos cuts).
        added: per round, how many tokens each row gained (its accepted drafts plus the target's token;
            0 for a finished row).
        target_forwards: forward passes of the target model (one per round).
        draft_forwards: forward passes of the draft model (0 for prompt lookup).
    """

    drafter: str
    proposed: list = field(default_factory=list)
    accepted: list = field(default_factory=list)
    added: list = field(default_factory=list)
    target_forwards: int = 0
    draft_forwards: int = 0

    def record(self, draft: Draft, keep: torch.LongTensor) -> None:
        """One round: ``keep[r]`` tokens added to row ``r`` (its accepted drafts plus the target's own token)."""
        self.proposed.append(draft.counts.tolist())
        self.accepted.append(torch.minimum((keep - 1).clamp(min=0), draft.counts).tolist())
        self.added.append(keep.tolist())

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / proposed drafted tokens, over all rounds and rows (0 if none)."""
        proposed = sum(map(sum, self.proposed))
        return sum(map(sum, self.accepted)) / proposed if proposed else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """New tokens per row per target forward pass (1.0 for plain decoding), over the longest row."""
        rows = len(self.added[0]) if self.added else 0
        longest = max((sum(r[i] for r in self.added) for i in range(rows)), default=0)
        return longest / self.target_forwards if self.target_forwards else 0.0


def process_positions(processors: LogitsProcessorList, sequences: RaggedSequences, draft: Draft,
                      logits: torch.FloatTensor) -> torch.FloatTensor:
    """Run the processors on each of the ``gamma + 1`` positions, ``[rows, gamma + 1, vocab]`` float32.

    Position ``i`` sees the sequence followed by the first ``i`` drafted tokens, as in the reference.
    """
    scores = logits.clone()
    if len(processors) == 0:
        return scores
    for i in range(logits.shape[1]):
        context = sequences.aligned(draft.tokens[:, :i], draft.counts.clamp(max=i))
        scores[:, i] = processors(context, logits[:, i])
    return scores


def leading_true(flags: torch.BoolTensor) -> torch.LongTensor:
    """``[rows, n]`` bool -> ``[rows]`` int64: how many leading entries are True."""
    return flags.long().cumprod(dim=1).sum(dim=1)


def accept_greedy(draft: Draft, chosen: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Keep drafts while they equal the target's choice, then the target's own token.

    ``chosen``: ``[rows, gamma + 1]`` the target's token at each position (argmax, or one draw each).
    Returns ``(tokens [rows, gamma + 1], n_accepted [rows])``: row ``r`` keeps ``tokens[r, :n + 1]``.
    """
    gamma = draft.width
    real = torch.arange(gamma, device=chosen.device)[None, :] < draft.counts[:, None]
    n = leading_true((draft.tokens == chosen[:, :gamma]) & real)
    return chosen, n


def seeded_target_tokens(scores: torch.FloatTensor, draft: Draft, seeds: list[int], generated: torch.LongTensor,
                         active: torch.BoolTensor) -> torch.LongTensor:
    """The target's seeded draw at each verified position, for :func:`accept_greedy` (``seed=``).

    Row ``r`` at position ``i`` draws ``seeded_multinomial(softmax(scores[r, i]), [seeds[r]], [t])`` with
    ``t = generated[r] + i``, its new-token index: the very draw plain seeded sampling makes for that
    token (:func:`decoding.strategies.sample.seeded_draw`). Only the positions that can be kept are
    drawn: a row stops drawing after its first mismatch or its last draft; finished rows draw nothing.

    Args:
        scores: ``[rows, gamma + 1, vocab]`` float32, processed. generated: ``[rows]`` int64, tokens each
            row has generated so far. active: ``[rows]`` bool, rows not finished.
    Returns:
        ``[rows, gamma + 1]`` int64 (0 where nothing was drawn; :func:`accept_greedy` never keeps those).
    """
    rows, width = scores.shape[:2]
    chosen = torch.zeros(rows, width, dtype=torch.long, device=scores.device)
    counts, drafted, generated = draft.counts.tolist(), draft.tokens.tolist(), generated.tolist()
    drawing = [r for r, on in enumerate(active.tolist()) if on]   # one host sync, not one per row
    for i in range(width):
        if not drawing:
            break
        require_finite_scores(scores[drawing, i])
        picks = seeded_multinomial(scores[drawing, i].softmax(dim=-1), [seeds[r] for r in drawing],
                                   [generated[r] + i for r in drawing])
        chosen[drawing, i] = picks
        drawing = [r for r, pick in zip(drawing, picks.tolist()) if i < counts[r] and drafted[r][i] == pick]
    return chosen


def accept_speculative_sampling(draft: Draft, scores: torch.FloatTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Speculative sampling (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023).

    Drafted token ``x_i`` (drawn from ``q_i``) is accepted with probability ``min(1, p_i(x_i) / q_i(x_i))``
    (one uniform per drafted token, all drawn at once, as the reference draws them); at the first
    rejection the token is drawn from ``normalise(max(0, p_n - q_n))``; if all are accepted, from
    ``p_gamma``. The result is distributed exactly as a draw from the target's ``p``.

    ``scores``: ``[rows, gamma + 1, vocab]`` the target's processed scores; ``draft.scores`` are the
    draft's. Returns ``(tokens [rows, gamma + 1], n_accepted [rows])``.
    """
    require_finite_scores(scores)
    gamma, drafted = draft.width, draft.tokens[:, :, None]
    q = draft.scores.softmax(dim=-1)                                         # [rows, gamma, vocab]
    p = scores.softmax(dim=-1)                                               # [rows, gamma + 1, vocab]
    ratio = p[:, :gamma].gather(2, drafted).squeeze(2) / q.gather(2, drafted).squeeze(2)
    uniform = torch.rand_like(ratio)                                         # [rows, gamma]
    real = torch.arange(gamma, device=scores.device)[None, :] < draft.counts[:, None]
    n = leading_true((uniform <= ratio) & real)                              # [rows]
    rows = torch.arange(scores.shape[0], device=scores.device)
    p_next = p[rows, n]                                                      # [rows, vocab]
    rejected = n < draft.counts
    if bool(rejected.any()):
        residual = (p_next - q[rows, n.clamp(max=gamma - 1)]).clamp(min=0)
        residual = residual / residual.sum(dim=-1, keepdim=True)
        p_next = torch.where(rejected[:, None], residual, p_next)
    last = torch.multinomial(p_next, num_samples=1)                          # [rows, 1]
    tokens = torch.cat([draft.tokens, last], dim=1)
    tokens[rows, n] = last.squeeze(1)
    return tokens, n


def kept_lengths(tokens: torch.LongTensor, n: torch.LongTensor, room: torch.LongTensor,
                 eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """How many of ``tokens[r, :n + 1]`` each row keeps: at most ``room[r]``, and up to the first eos."""
    keep = torch.minimum(n + 1, room.clamp(min=0))
    if eos is not None:
        position = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        is_eos = torch.isin(tokens, eos) & (position < keep[:, None])
        first = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, keep)
        keep = torch.minimum(keep, first)
    return keep


AcceptRule = Callable[[Draft, torch.FloatTensor, RaggedSequences, torch.BoolTensor],
                      tuple[torch.LongTensor, torch.LongTensor]]


def acceptance_rule(do_sample: bool, seeds: Optional[list[int]] = None) -> AcceptRule:
    """The rule of step 3, chosen once: ``rule(draft, scores, sequences, active) -> (tokens, n_accepted)``.

    - greedy: :func:`accept_greedy` against the target's argmax;
    - sampling with ``seed=``: :func:`accept_greedy` against the row's seeded draw (:func:`seeded_target_tokens`);
    - sampling: :func:`accept_speculative_sampling` when the drafter has a distribution (a draft model),
      else (prompt lookup, or a round without drafts) one draw per position and :func:`accept_greedy`.
    """
    def greedy(draft, scores, sequences, active):
        return accept_greedy(draft, scores.argmax(dim=-1))

    def seeded(draft, scores, sequences, active):
        generated = sequences.lengths - sequences.prompt_length
        return accept_greedy(draft, seeded_target_tokens(scores, draft, seeds, generated, active))

    def sampled(draft, scores, sequences, active):
        if draft.scores is not None and draft.width > 0:
            return accept_speculative_sampling(draft, scores)
        require_finite_scores(scores)
        probs = scores.softmax(dim=-1).reshape(-1, scores.shape[-1])              # one draw per position
        return accept_greedy(draft, torch.multinomial(probs, num_samples=1).view(scores.shape[:2]))

    if not do_sample:
        return greedy
    return sampled if seeds is None else seeded


class Rounds:
    """What a round leaves besides the tokens: statistics, and with one row the stream and the per-token outputs.

    Args:
        stats: filled round by round (``GenerateOutput.trace["speculation"]``).
        outputs: records one ``[1, vocab]`` score and logit entry per new token, when asked for.
        streamer: gets each round's kept tokens ``[1, k]``.
    """

    def __init__(self, stats: SpeculationStats, outputs: StepOutputs, streamer: Any = None):
        self.stats, self.outputs, self.streamer = stats, outputs, streamer
        self.observer: Optional[Callable] = None    # a tracer's speculation_round(draft, tokens, keep, scores, logits)

    def record(self, draft: Draft, tokens: torch.LongTensor, keep: torch.LongTensor, scores: torch.FloatTensor,
               logits: torch.FloatTensor) -> None:
        self.stats.record(draft, keep)
        if self.observer is not None:
            self.observer(draft, tokens, keep, scores, logits)
        if self.streamer is None and self.outputs.scores is None and self.outputs.logits is None:
            return
        k = int(keep[0])                                   # one row: checked before the first forward
        if self.streamer is not None:
            self.streamer.put(tokens[:, :k].cpu())
        for i in range(k):
            self.outputs.record(logits[:, i], scores[:, i])


def speculative_decoding(target: BlockRunner, drafter: Drafter, sequences: RaggedSequences,
                         processors: LogitsProcessorList, criteria: StoppingCriteriaList, accept: AcceptRule,
                         rounds: Rounds, max_length: int, eos: Optional[torch.Tensor]) -> RaggedSequences:
    """Generate with speculation until every row is done; returns ``sequences``, grown.

    Args:
        target: the target model's block runner. drafter: proposes the tokens (:mod:`.drafters`).
        sequences: the prompt rows ``[rows, prompt_len]``, left-padded; every row grows by its own count.
        processors: the target's pipeline. criteria: run once per round on the whole sequences.
        accept: the acceptance rule (:func:`acceptance_rule`). rounds: records what each round did.
        max_length: absolute length limit (prompt included) of every row. eos: ``[n_eos]`` or None.
    """
    processors.reset()
    active = torch.ones(sequences.rows, dtype=torch.bool, device=sequences.lengths.device)
    while bool(active.any()):
        room = torch.where(active, max_length - sequences.lengths, 0)       # tokens each row may still add
        # 1. propose: the target adds one token of its own, so at most room - 1 drafts
        draft = drafter.propose(sequences, (room - 1).clamp(min=0))
        # 2. verify: one forward over [newest token, drafts], [rows, gamma + 1, vocab]
        logits = target.verify(sequences, draft.tokens)
        scores = process_positions(processors, sequences, draft, logits)
        # 3. accept
        tokens, n = accept(draft, scores, sequences, active)
        # 4. trim at the length limit and the first eos; the target's cache drops the rejected tokens
        keep = torch.where(active, kept_lengths(tokens, n, room, eos), 0)
        sequences.append(tokens, keep)
        target.truncate(sequences.lengths - 1)                               # the newest token is fed next round
        drafter.accepted(draft, (keep - 1).clamp(min=0), active)
        rounds.record(draft, tokens, keep, scores, logits)
        # 5. stop: the criteria see the whole sequences once per round
        done = criteria(sequences.aligned(), rounds.outputs.scores_so_far()) | (sequences.lengths >= max_length)
        active = active & ~done
    drafter.finish()
    return sequences
