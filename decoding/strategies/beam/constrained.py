"""Constrained beam search: every returned sequence contains the call's phrases (Hokamp and Liu 2017;
Post and Vilar 2018, dynamic beam allocation).

Beam search alone never writes a phrase the model finds unlikely. Constrained beam search also
considers, at every step, the tokens that make progress on the constraints (:mod:`decoding.constraints`),
and shares the ``N = num_beams`` places among **banks**: a sequence's bank is how many constraint tokens
it has met, and the places go round-robin over the banks, best bank first, best score first within one,
so that sequences that met more of the constraints survive even when they score lower. One step, per prompt:

1. **Score**: the call's processors on ``log_softmax(logits)``; each continuation's score is its
   beam's running score plus that log-prob.
2. **Candidates**: the ``K = max(2, 1 + n_eos) * N`` best continuations; walked best first, an eos
   candidate among the first N finishes *if its sequence meets every constraint* (else it is dropped);
   the others are kept until N are.
3. **Progress candidates**: for each running beam that has not met every constraint, each token that
   advances a constraint (:meth:`~decoding.constraints.ConstraintProgress.next_tokens`) is added
   (unless that sequence is already a candidate).
4. **Banks** (:func:`allot`): the N places go round-robin over the banks of the candidates.
5. **Done?** The early-stopping rule of :class:`~.hypotheses.FinishedList`.

At the end the running beams that meet every constraint join the finished hypotheses; a prompt with
fewer than ``num_return_sequences`` hypotheses that meet every constraint is an error
(:class:`~decoding.constraints.ConstraintsNotMet`), never a sequence that misses one.

This is ``_constrained_beam_search`` of transformers 4.55 step for step; docs/constrained-beam-search.md
has the formula and the deliberate differences. Rows ``b * N + j``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ...constraints import Constraint, ConstraintProgress, ConstraintsNotMet, satisfies
from ...processors import LogitsProcessorList
from ...runner import ModelRunner
from ...stopping import StoppingCriteriaList
from ..state import StepOutputs
from .hypotheses import FinishedList, Packed, pack


@dataclass(frozen=True)
class ConstrainedConfig:
    """The knobs of one constrained beam search (see :class:`~.search.BeamConfig` for the shared ones)."""

    num_beams: int
    max_length: int
    constraints: tuple
    length_penalty: float = 1.0
    early_stopping: object = False
    num_return_sequences: int = 1
    eos_token_ids: Optional[torch.Tensor] = None
    pad_token_id: int = 0

    @property
    def candidates(self) -> int:
        n_eos = 0 if self.eos_token_ids is None else len(self.eos_token_ids)
        return max(2, 1 + n_eos) * self.num_beams


def allot(ids: torch.LongTensor, totals: torch.FloatTensor, prompt: int, picked: list[tuple[float, int, int]],
          constraints: Sequence[Constraint], num_beams: int) -> list[tuple[float, int, int]]:
    """Steps 3-4 for one prompt: add the progress candidates, then share the N places among the banks.

    ``ids`` ``[B * N, length]`` the running sequences, ``totals`` ``[B * N, V]`` each continuation's score,
    ``picked`` the N kept candidates as ``(score, token, parent row)``. Returns N such triples.
    """
    rows = range(prompt * num_beams, (prompt + 1) * num_beams)
    sequences = [ids[row].tolist() + [token] for _, token, row in picked]
    banks = [ConstraintProgress.read(constraints, sequence).bank for sequence in sequences]
    scores = [totals.new_tensor(score) for score, _, _ in picked]
    tokens, parents = [token for _, token, _ in picked], [row for _, _, row in picked]
    for row in rows:
        before = ids[row].tolist()
        progress = ConstraintProgress.read(constraints, before)
        for token in progress.next_tokens():
            if before + [token] in sequences:
                continue
            advanced = progress.copy()
            advanced.add(token)
            sequences.append(before + [token])
            banks.append(advanced.bank)
            scores.append(totals[row, token])
            tokens.append(token)
            parents.append(row)
    if len(sequences) == len(picked):
        return picked
    all_scores, all_banks = torch.stack(scores), torch.tensor(banks, device=totals.device)
    order = (all_banks * 100 + all_scores).sort(descending=True).indices             # bank first, then score
    turn, counter, previous = [], -1, None                     # round-robin: the i-th of each bank takes turn i
    for bank in all_banks[order].tolist():
        counter = counter + 1 if bank == previous else 0
        previous = bank
        turn.append(counter)
    order = order[torch.sort(torch.tensor(turn, device=order.device), stable=True).indices][:num_beams].tolist()
    return [(float(all_scores[i]), tokens[i], parents[i]) for i in order]


def finish_or_keep(top: list[tuple[float, int, int]], ids: torch.LongTensor, history: list[tuple[int, ...]],
                   places: FinishedList, config: ConstrainedConfig) -> list[tuple[float, int, int]]:
    """Step 2 for one prompt: walk its K candidates ``(score, token, parent row)`` best first. An eos candidate
    among the first N finishes if its sequence meets every constraint (else it is dropped); the others are
    kept until N are. Returns the N kept ones."""
    eos = set(config.eos_token_ids.tolist()) if config.eos_token_ids is not None else set()
    picked = []
    for rank, (score, token, row) in enumerate(top):
        if token in eos:
            if rank < config.num_beams and satisfies(config.constraints, ids[row].tolist()):
                places.add(ids[row].clone(), score, history[row] + (row,), ids.shape[1] + 1 - places.prompt_length)
        else:
            picked.append((score, token, row))
        if len(picked) == config.num_beams:
            break
    return picked


def constrained_beam_search(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
                            criteria: StoppingCriteriaList, config: ConstrainedConfig,
                            outputs: Optional[StepOutputs] = None,
                            on_step: Optional[Callable[[torch.LongTensor], None]] = None,
                            on_rows: Optional[Callable] = None) -> Packed:
    """Run constrained beam search to the end; returns the packed hypotheses (see the module docstring).

    ``on_step`` is called with the running sequences ``[B * N, length]`` after every step (what
    ``GenerationInterrupted.partial`` holds if a later step fails). ``on_rows``: a tracer's
    ``beam_rows(step, tokens, parents, scores)``, called once per step with the new running beams
    (``[B * N]`` each).

    Raises:
        ConstraintsNotMet: a prompt has fewer than ``num_return_sequences`` hypotheses that meet every constraint.
    """
    processors.reset()
    rows_count, prompt_length = prompt_ids.shape
    beams, constraints = config.num_beams, config.constraints
    batch = rows_count // beams
    finished = [FinishedList(beams, config.length_penalty, config.early_stopping, config.max_length, prompt_length)
                for _ in range(batch)]
    device = prompt_ids.device
    running = torch.full((batch, beams), -1e9, device=device)
    running[:, 0] = 0.0
    running, ids, history = running.view(-1), prompt_ids, [()] * rows_count

    logits = runner.prefill(prompt_ids)                                                # [B * N, V] float32
    while True:
        log_probs = processors(ids, torch.log_softmax(logits, dim=-1))
        totals = log_probs + running[:, None]                                          # [B * N, V]
        if outputs is not None:
            # reference quirk: constrained beam search records the running score plus the log-prob.
            outputs.record(logits, totals, runner.last_output)
        top_scores, top = torch.topk(totals.view(batch, -1), config.candidates, dim=1, largest=True, sorted=True)
        vocab = totals.shape[1]
        top_list, parents, tokens = top_scores.tolist(), (top // vocab).tolist(), (top % vocab).tolist()
        length, chosen = ids.shape[1], []
        for b, places in enumerate(finished):
            if places.done:
                # reference quirk: a done prompt's rows continue row 0 (prompt 0's first beam), on pad, scoring 0.
                chosen += [(0.0, config.pad_token_id, 0)] * beams
                continue
            ranked = [(score, token, b * beams + parent)
                      for token, parent, score in zip(tokens[b], parents[b], top_list[b])]
            picked = finish_or_keep(ranked, ids, history, places, config)
            chosen += allot(ids, totals, b, picked, constraints, beams)
            places.done = places.done or places.can_stop(top_list[b][0], length + 1)

        new_scores, new_tokens, new_parents = zip(*chosen)
        tokens_t, parents_t = torch.tensor(new_tokens, device=device), torch.tensor(new_parents, device=device)
        if on_rows is not None:
            on_rows(length - prompt_length, tokens_t, parents_t, torch.tensor(new_scores, dtype=torch.float32))
        ids = torch.cat([ids[parents_t], tokens_t[:, None]], dim=-1)
        running = torch.tensor(new_scores, dtype=torch.float32, device=device)
        history = [history[p] + (p,) for p in new_parents]
        runner.reorder(parents_t)
        if on_step is not None:
            on_step(ids)
        if all(p.done for p in finished) or bool(
                criteria(ids, outputs.scores_so_far() if outputs is not None else None).all()):
            break
        logits = runner.step(tokens_t)

    # the running beams that meet every constraint join the finished hypotheses (only those: see the docs)
    for b, places in enumerate(finished):
        if not places.done:
            for row in range(b * beams, (b + 1) * beams):
                if satisfies(constraints, ids[row].tolist()):
                    places.add(ids[row], float(running[row]), history[row], ids.shape[1] - prompt_length)
        if len(places.hypotheses) < config.num_return_sequences:
            raise ConstraintsNotMet(
                f"prompt {b}: only {len(places.hypotheses)} of the hypotheses met every constraint "
                f"({list(constraints)}) within max_length={config.max_length}, and num_return_sequences is "
                f"{config.num_return_sequences}; raise max_new_tokens or num_beams, or lower num_return_sequences.")
    eos_id = int(config.eos_token_ids[0]) if config.eos_token_ids is not None else None
    return pack([places.hypotheses for places in finished], config.num_return_sequences, config.max_length,
                prompt_length, config.pad_token_id, eos_id)
