"""Speculative decoding: a drafter proposes tokens, the target checks them all in one forward pass.

Each round (read top to bottom in :func:`speculative_decoding`):

1. **propose**: the drafter proposes up to ``gamma`` tokens per row (:mod:`decoding.speculation`);
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
kept fewer tokens than another gets masked holes (:mod:`decoding.speculation.block_runner`). With one row
everything above is what ``model.generate(assistant_model=... | prompt_lookup_num_tokens=... |
assistant_early_exit=...)`` does, random draws included; the reference refuses more than one row.
See docs/speculative.md for why the acceptance rules are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..speculation.block_runner import BlockRunner
from ..speculation.drafters import Draft, Drafter
from ..outputs import GenerateOutput
from ..processors import LogitsProcessorList
from ..speculation.ragged import RaggedSequences
from ..seeding import seeded_multinomial
from ..stopping import StoppingCriteriaList


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


def _kept_lengths(tokens: torch.LongTensor, n: torch.LongTensor, budget: torch.LongTensor,
                  eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """How many of ``tokens[r, :n + 1]`` each row keeps: at most ``budget[r]``, and up to the first eos."""
    keep = torch.minimum(n + 1, budget.clamp(min=0))
    if eos is not None:
        position = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        is_eos = torch.isin(tokens, eos) & (position < keep[:, None])
        first = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, keep)
        keep = torch.minimum(keep, first)
    return keep


def _without_max_length(criteria: StoppingCriteriaList) -> StoppingCriteriaList:
    return StoppingCriteriaList(c for c in criteria if type(c).__name__ != "MaxLengthCriteria")


def speculative_decoding(model: Any, prompt_ids: torch.LongTensor, attention_mask: torch.LongTensor,
                         drafter: Drafter, processors: LogitsProcessorList, criteria: StoppingCriteriaList,
                         max_length: int, do_sample: bool, pad: Optional[torch.Tensor],
                         eos: Optional[torch.Tensor], streamer: Any = None, output_scores: bool = False,
                         output_logits: bool = False, return_dict: bool = False, seeds: Optional[list[int]] = None):
    """Generate with speculation until every row is done; return what ``generate`` returns.

    Args:
        model: the target model.
        prompt_ids, attention_mask: ``[rows, prompt_len]``, left-padded.
        drafter: proposes the tokens (:mod:`decoding.speculation`).
        processors: the target's pipeline; criteria: the stopping criteria (run once per round).
        max_length: absolute length limit (prompt included) of every row.
        do_sample: sampling (speculative sampling with a draft model) or greedy.
        pad: written after a row's end when rows differ in length; eos: ``[n_eos]`` or None.
        streamer: gets the prompt, then each round's accepted tokens ``[1, k]`` (one row only).
        output_scores / output_logits: one ``[1, vocab]`` entry per new token (one row only).
        seeds: one seed per row (``generate(seed=...)``, sampling only): every token is row ``r``'s
            draw keyed by ``(seeds[r], new-token index)``, the same as plain seeded sampling; None:
            torch's global generator, as the reference.
    """
    rows, device = prompt_ids.shape[0], prompt_ids.device
    processors.reset()
    sequences = RaggedSequences(prompt_ids, max_length, fill=int(pad) if pad is not None else 0)
    target = BlockRunner(model, attention_mask, output_device=device)
    stats = SpeculationStats(drafter.name)
    scores_out: Optional[list] = [] if output_scores else None
    logits_out: Optional[list] = [] if output_logits else None
    row_criteria = criteria if rows == 1 else _without_max_length(criteria)
    active = torch.ones(rows, dtype=torch.bool, device=device)
    if streamer is not None:
        streamer.put(prompt_ids.cpu())

    fill = int(pad) if pad is not None else 0
    try:
        while True:
            # 1. propose: at most max_length - length - 1 drafts (the target adds one token of its own)
            limit = torch.where(active, max_length - sequences.lengths - 1, 0)
            draft = drafter.propose(sequences, limit)
            gamma = draft.width

            # 2. verify: one forward over [last token, drafts] (first round: [prompt, drafts])
            if target.slots == 0:
                block = torch.cat([prompt_ids, draft.tokens], dim=1)
                logits = target.forward(block, num_logits=gamma + 1, first=True)
            else:
                logits = target.forward(torch.cat([sequences.last(1), draft.tokens], dim=1), num_logits=gamma + 1)
            scores = process_positions(processors, sequences, draft, logits)   # [rows, gamma + 1, vocab]

            # 3. accept
            if do_sample and seeds is not None:
                generated = sequences.lengths - sequences.prompt_length
                tokens, n = accept_greedy(draft, seeded_target_tokens(scores, draft, seeds, generated, active))
            elif do_sample and draft.scores is not None and gamma > 0:
                tokens, n = accept_speculative_sampling(draft, scores)
            else:
                if do_sample:
                    probs = scores.softmax(dim=-1).reshape(-1, scores.shape[-1])    # one draw per position
                    chosen = torch.multinomial(probs, num_samples=1).view(rows, gamma + 1)
                else:
                    chosen = scores.argmax(dim=-1)
                tokens, n = accept_greedy(draft, chosen)

            # 4. trim: length budget and eos; drop the rejected tokens from the target's cache
            keep = _kept_lengths(tokens, n, max_length - sequences.lengths, eos)
            keep = torch.where(active, keep, 0)
            n = (keep - 1).clamp(min=0)
            sequences.append(tokens, keep)
            target.truncate(sequences.lengths - 1)        # the newest token is fed next round
            drafter.accepted(draft, n, active)
            stats.proposed.append(draft.counts.tolist())
            stats.accepted.append(torch.minimum(n, draft.counts).tolist())
            stats.added.append(keep.tolist())
            if rows == 1:
                k = int(keep[0])
                if streamer is not None:
                    streamer.put(tokens[:, :k].cpu())
                if scores_out is not None:
                    scores_out.extend(scores[:, i] for i in range(k))
                if logits_out is not None:
                    logits_out.extend(logits[:, i] for i in range(k))

            # 5. stop: the criteria see the whole sequence once per round
            recorded = tuple(scores_out) if scores_out is not None else None
            done = row_criteria(sequences.aligned(), recorded)
            done = done | (sequences.lengths >= max_length)
            active = active & ~done
            if not bool(active.any()):
                break
    except (Exception, KeyboardInterrupt) as error:
        if int(sequences.lengths.max()) == sequences.prompt_length:
            raise
        from ..generate import GenerationInterrupted  # here: generate imports this module
        new = int(sequences.lengths.max()) - sequences.prompt_length
        raise GenerationInterrupted(
            f"generation stopped after {new} new tokens by {type(error).__name__}: {error}; the tokens so far "
            "are in .partial", sequences.padded(fill)) from error

    drafter.finish()
    if streamer is not None:
        streamer.end()
    stats.target_forwards = target.forwards
    stats.draft_forwards = getattr(drafter, "forwards", 0)
    result = sequences.padded(fill)
    if not return_dict:
        return result
    return GenerateOutput(sequences=result,
                          scores=tuple(scores_out) if scores_out is not None else None,
                          logits=tuple(logits_out) if logits_out is not None else None,
                          past_key_values=target.cache, trace={"speculation": stats})
