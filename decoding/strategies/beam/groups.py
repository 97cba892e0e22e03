"""Diverse (group) beam search: ``num_beam_groups`` groups of beams decoded in turn (Vijayakumar et al. 2018).

Per prompt the ``N = num_beams`` running beams are split into ``G = num_beam_groups`` groups of
``n = N / G``; each group is a small beam search of its own, with its own ``n`` finished places. At
every step the groups choose in turn, and group ``g`` sees its scores lowered by the Hamming
diversity penalty: ``diversity_penalty`` per beam of an earlier group that chose the same token at
this step (:mod:`decoding.processors.diversity`, built into the call's pipeline). One step, per group:

1. **Score**: the call's processors on ``log_softmax(logits)`` (the diversity penalty among them),
   then each continuation's score is its beam's running score plus that log-prob.
2. **Candidates**: the ``K = max(2, 1 + n_eos) * n`` best continuations of the group's ``n`` beams.
3. **Walk them best first**: an eos candidate among the first ``n`` becomes a finished hypothesis
   (the others are dropped); any other candidate becomes a running beam, until ``n`` are running.
4. **Done?** The group's early-stopping rule (:meth:`~.hypotheses.FinishedList.can_stop`); a done
   group's rows idle on pad tokens.

Then the cache follows the chosen parents, and the search stops when every group of every prompt is
done or the stopping criteria hold for every row (max length). Each group's running beams join its
finished ones; each prompt returns its ``num_return_sequences`` best hypotheses over all its groups.

This is ``_group_beam_search`` of transformers 4.55 (the last release that ran it) step for step,
token for token; docs/diverse-beam-search.md has the formula and the deliberate differences.
Shapes: ``B`` prompts, rows ``b * N + j`` (group ``g`` holds ``j`` in ``g * n .. g * n + n - 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ...processors import LogitsProcessorList
from ...processors.diversity import HammingDiversityLogitsProcessor
from ...runner import ModelRunner
from ...stopping import StoppingCriteriaList
from ..state import StepOutputs
from .hypotheses import FinishedList, Packed, pack


@dataclass(frozen=True)
class GroupConfig:
    """The knobs of one diverse beam search (see :class:`~.search.BeamConfig` for the shared ones)."""

    num_beams: int
    num_beam_groups: int
    max_length: int
    length_penalty: float = 1.0
    early_stopping: object = False
    num_return_sequences: int = 1
    eos_token_ids: Optional[torch.Tensor] = None
    pad_token_id: Optional[torch.Tensor] = None

    @property
    def group_size(self) -> int:
        return self.num_beams // self.num_beam_groups

    @property
    def candidates(self) -> int:
        """K per group: ``max(2, 1 + n_eos) * group_size``."""
        n_eos = 0 if self.eos_token_ids is None else len(self.eos_token_ids)
        return max(2, 1 + n_eos) * self.group_size


@dataclass
class GroupStep:
    """One group's choice at one step, as observers (tree, beam streamers) see it; plain lists.

    Attributes:
        step: index of the token chosen (0 for the first); group: the group.
        candidates: per prompt, the K candidates best first as ``(token, parent_row, score, fate)``: fate is
            "kept", "eos" (finished), "eos outside the first n" or "not needed" (n beams were running already).
            Empty for a prompt whose group was done before this step.
        done: per prompt, whether the group is done after this step.
    """

    step: int
    group: int
    candidates: list[list[tuple[int, int, float, str]]]
    done: list[bool]


@dataclass
class GroupResult:
    """What the search returns: the packed hypotheses, and the running state at the end."""

    packed: Packed
    finished: list[list[FinishedList]]
    running_ids: torch.LongTensor


def group_rows(group: int, batch: int, config: GroupConfig) -> torch.LongTensor:
    """``[B * n]`` the flat rows of group ``group``, prompt by prompt."""
    n = config.group_size
    return (torch.arange(batch)[:, None] * config.num_beams + group * n + torch.arange(n)[None, :]).reshape(-1)


def choose_in_group(scores: torch.FloatTensor, running: torch.FloatTensor, ids: torch.LongTensor,
                    rows: torch.LongTensor, history: list[tuple[int, ...]], finished: list[FinishedList],
                    config: GroupConfig, pad: int) -> tuple[list[int], list[int], list[float], list]:
    """Steps 2-4 for one group: ``scores`` ``[B * n, V]`` processed log-probs of its rows, ``running``
    ``[B * n]`` their running scores. Returns the group's new tokens, parent rows and running scores
    (``B * n`` each, prompt by prompt) and, per prompt, the candidates with their fate."""
    n, vocab, batch = config.group_size, scores.shape[-1], len(finished)
    eos = set(config.eos_token_ids.tolist()) if config.eos_token_ids is not None else set()
    total = (scores + running[:, None]).view(batch, n * vocab)
    top_scores, top = torch.topk(total, config.candidates, dim=1, largest=True, sorted=True)
    top_scores, parents, tokens = top_scores.tolist(), (top // vocab).tolist(), (top % vocab).tolist()
    rows, length = rows.tolist(), ids.shape[1]
    new_tokens, new_parents, new_scores, seen = [], [], [], []
    for b, places in enumerate(finished):
        if places.done:
            # reference quirk: a done prompt's rows continue row 0 of the group (prompt 0's), on pad, scoring 0.
            new_tokens += [pad] * n
            new_parents += [rows[0]] * n
            new_scores += [0.0] * n
            seen.append([])
            continue
        kept, fates = 0, []
        for rank, (token, parent, score) in enumerate(zip(tokens[b], parents[b], top_scores[b])):
            row = rows[b * n + parent]
            if kept == n:
                fates.append((token, row, score, "not needed"))
            elif token in eos:
                if rank >= n:
                    fates.append((token, row, score, "eos outside the first n"))
                    continue
                places.add(ids[row].clone(), score, history[row] + (row,), length + 1 - places.prompt_length)
                fates.append((token, row, score, "eos"))
            else:
                new_tokens.append(token)
                new_parents.append(row)
                new_scores.append(score)
                kept += 1
                fates.append((token, row, score, "kept"))
        places.done = places.done or places.can_stop(top_scores[b][0], length + 1)
        seen.append(fates)
    return new_tokens, new_parents, new_scores, seen


def group_beam_search(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
                      criteria: StoppingCriteriaList, config: GroupConfig, outputs: Optional[StepOutputs] = None,
                      observers: Sequence[Callable[[GroupStep], None]] = (),
                      on_step: Optional[Callable[[torch.LongTensor], None]] = None,
                      on_rows: Optional[Callable] = None) -> GroupResult:
    """Run diverse beam search to the end.

    Args:
        runner: drives the model; ``prompt_ids`` rows are ``b * N + j``.
        prompt_ids: ``[B * N, P]`` int64, each (left-padded) prompt repeated N times.
        processors: run once per group on every row ``[B * N]`` (the group keeps its own rows), so
            processors with per-row data work unchanged; a :class:`HammingDiversityLogitsProcessor`
            among them is told the group and the tokens chosen so far before each group.
        criteria: run on every row after each step; the search stops when all of them hold.
        config: the knobs. outputs: collects scores / logits per step when asked for.
        observers: called with a :class:`GroupStep` after each group's choice.
        on_step: called with the running sequences ``[B * N, length]`` after every step (what
            ``GenerationInterrupted.partial`` holds if a later step fails).
        on_rows: a tracer's ``beam_rows(step, tokens, parents, scores, stages)``, called once per step with
            the new running beams (``[B * N]`` each) and the step's raw and processed log-probs.
    """
    processors.reset()
    diversity = [p for p in processors if isinstance(p, HammingDiversityLogitsProcessor)]
    rows_count, prompt_length = prompt_ids.shape
    batch, n, pad = rows_count // config.num_beams, config.group_size, int(config.pad_token_id)
    device = prompt_ids.device
    groups = [group_rows(g, batch, config).to(device) for g in range(config.num_beam_groups)]
    finished = [[FinishedList(n, config.length_penalty, config.early_stopping, config.max_length, prompt_length)
                 for _ in groups] for _ in range(batch)]
    running = torch.full((batch, config.num_beams), -1e9, device=device)
    running[:, ::n] = 0.0                   # one live beam per group at first, or a group would pick one token n times
    running, ids, history = running.view(-1), prompt_ids, [()] * rows_count

    logits = runner.prefill(prompt_ids)                                                 # [B * N, V] float32
    while True:
        log_probs = torch.log_softmax(logits, dim=-1)
        processed = torch.zeros_like(log_probs)
        tokens = torch.zeros(rows_count, dtype=torch.long, device=device)
        parents = torch.zeros(rows_count, dtype=torch.long, device=device)
        new_running = torch.zeros(rows_count, device=device)
        for g, rows in enumerate(groups):                                   # the groups choose in turn
            for processor in diversity:
                processor.set_group(g, tokens)
            processed[rows] = processors(ids, log_probs)[rows]
            chosen = choose_in_group(processed[rows], running[rows], ids, rows, history,
                                     [places[g] for places in finished], config, pad)
            tokens[rows] = torch.tensor(chosen[0], device=device)
            parents[rows] = torch.tensor(chosen[1], device=device)
            new_running[rows] = torch.tensor(chosen[2], dtype=torch.float32, device=device)
            for observe in observers:
                observe(GroupStep(ids.shape[1] - prompt_length, g, chosen[3], [p[g].done for p in finished]))
        if outputs is not None:
            outputs.record(logits, processed, runner.last_output)
        if on_rows is not None:
            on_rows(ids.shape[1] - prompt_length, tokens, parents, new_running,
                    [("raw", log_probs), ("processed", processed)])

        ids = torch.cat([ids[parents], tokens[:, None]], dim=-1)                # the new running beams
        running, history = new_running, [history[p] + (p,) for p in parents.tolist()]
        runner.reorder(parents)
        if on_step is not None:
            on_step(ids)
        all_done = all(places.done for prompt in finished for places in prompt)
        if all_done or bool(criteria(ids, outputs.scores_so_far() if outputs is not None else None).all()):
            break
        logits = runner.step(tokens)

    # the running beams of every group not done compete with its finished hypotheses
    for b, prompt in enumerate(finished):
        for g, places in enumerate(prompt):
            if not places.done:
                for row in groups[g][b * n:(b + 1) * n].tolist():
                    places.add(ids[row], float(running[row]), history[row], ids.shape[1] - prompt_length)
    eos = int(config.eos_token_ids[0]) if config.eos_token_ids is not None else None
    pools = [[h for places in prompt for h in places.hypotheses] for prompt in finished]
    return GroupResult(pack(pools, config.num_return_sequences, config.max_length, prompt_length, pad, eos),
                       finished, ids)

