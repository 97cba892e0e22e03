"""Beam search and beam sampling (``num_beams > 1``), step for step as ``model.generate`` does them.

Per prompt the search keeps ``N = num_beams`` *running* beams (unfinished hypotheses, ranked by
the sum of their tokens' log-probabilities) and up to ``N`` *finished* hypotheses (ranked by that
sum divided by ``generated_length ** length_penalty``). One step:

1. **Score**: ``log_softmax`` of every running beam's logits, then the processors (on log-probs:
   the opposite order from sampling, where processors see raw logits).
2. **Accumulate**: each continuation's score is its beam's running score plus its log-prob.
3. **Pick K candidates** per prompt among the ``N * vocab`` continuations, ``K = max(2, 1 + n_eos) * N``:
   the K best (beam search), or K draws without replacement from ``softmax`` of the
   accumulated scores (beam sampling).
4. **Finished?** The stopping criteria (eos, max length, stop strings, yours) on each candidate sequence.
5. **Running beams**: the N best candidates that did not finish.
6. **Finished hypotheses**: the candidates that finished *and* rank among the first N of the K are
   length-normalised and compete with the finished set for its N places.
7. **Reorder the KV cache** so that row ``b * N + j`` holds the history of running beam ``j``.
8. **Go on?** Stop when no prompt can improve its finished set (the early-stopping rule), or, with
   ``early_stopping=True``, when every prompt has N finished hypotheses, or when every candidate
   finished (max length).

Then each prompt returns its ``num_return_sequences`` best finished hypotheses. docs/beam-search.md
explains every rule with its formula; ``GenerationMixin._beam_search`` in transformers 5.23 is
the behaviour this reproduces (scores, ties and the ``-1e9`` "impossible" markers included).

Shapes: ``B`` prompts, ``N`` beams, ``K`` candidates, ``V`` vocabulary, ``P`` padded prompt length,
``W`` the width of the sequence buffers: at least ``length + 1`` during a step, doubled by
:func:`make_room` when a step would not fit, never past ``L`` = ``max_length``. Flat rows are
``b * N + j`` (the order of the expanded prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ...errors import require_finite_scores
from ...processors import LogitsProcessorList
from ...processors.base import capabilities
from ...runner import ModelRunner, widened
from ...stopping import StoppingCriteriaList
from ..state import StepOutputs
from ...versions import BEAM_SAMPLE_SORTS_DRAWS

# reference quirk: ruled-out candidates get -1e9 added, not -inf assigned (their order survives, up to rounding).
IMPOSSIBLE = -1.0e9


@dataclass(frozen=True)
class BeamConfig:
    """The knobs of one beam search.

    Attributes:
        num_beams: N, running beams (and finished places) per prompt, >= 2.
        max_length: L, the longest a sequence can get, prompt included.
        length_penalty: a finished hypothesis scores ``sum_logprobs / generated_length ** length_penalty``;
            > 0 favours longer ones, < 0 shorter ones.
        early_stopping: True, False or "never" (see docs/beam-search.md, "When the search stops").
        num_return_sequences: finished hypotheses returned per prompt (<= num_beams).
        do_sample: draw the K candidates instead of taking the K best (beam sampling).
        eos_token_ids: ``[n_eos]`` int64 or None; sets K and the fill value.
        pad_token_id: scalar int64 or None; the fill value of short hypotheses (see ``fill_value``).
    """

    num_beams: int
    max_length: int
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    num_return_sequences: int = 1
    do_sample: bool = False
    eos_token_ids: Optional[torch.Tensor] = None
    pad_token_id: Optional[torch.Tensor] = None

    @property
    def candidates(self) -> int:
        """K = ``max(2, 1 + n_eos) * num_beams``: enough that N candidates survive even if N*n_eos end on eos."""
        n_eos = 0 if self.eos_token_ids is None else len(self.eos_token_ids)
        return max(2, 1 + n_eos) * self.num_beams

    @property
    def fill_value(self) -> int:
        """What follows the end of a hypothesis shorter than the longest returned one.

        The reference's rule: ``pad_token_id`` when eos is set and pad is a non-zero id; ``eos[0]``
        when eos is set and pad is None or 0; ``-1`` when there is no eos (even with a pad).
        """
        # reference quirk: the fill after a short hypothesis is pad if non-zero, else eos[0], and -1 without eos.
        if self.eos_token_ids is None:
            return -1
        if self.pad_token_id is not None and int(self.pad_token_id) != 0:
            return int(self.pad_token_id)
        return int(self.eos_token_ids[0])


@dataclass
class BeamState:
    """Everything the search tracks; tensors are replaced (never modified in place) at each step.

    Attributes:
        prompt_length: P.
        length: the current length of the running sequences, prompt included.
        running_ids: ``[B, N, W]`` int64, prompt + tokens of the running beams; ``fill_value`` beyond ``length``.
        running_scores: ``[B, N]`` float32, the sum of each running beam's processed log-probs.
            Before the first step: ``[0, -1e9, ..., -1e9]`` (all beams are the same prompt; only
            the first may be extended, or the first step would pick the same token N times).
        running_parents: ``[B, N, W - P]`` int32, the flat row each step's token was chosen from
            (the reference's ``beam_indices``), -1 for steps not taken yet.
        finished_ids: ``[B, N, W]`` int64, the finished hypotheses, best first.
        finished_scores: ``[B, N]`` float32, their length-normalised scores; -1e9 for empty places.
        finished_parents: ``[B, N, W - P]`` int32, as ``running_parents``.
        is_finished: ``[B, N]`` bool, which places hold a finished hypothesis.
        can_improve: ``[B, 1]`` bool, the early-stopping rule's verdict per prompt: False once no
            running beam can beat the worst finished hypothesis (it never turns True again).
    """

    prompt_length: int
    length: int
    running_ids: torch.LongTensor
    running_scores: torch.FloatTensor
    running_parents: torch.IntTensor
    finished_ids: torch.LongTensor
    finished_scores: torch.FloatTensor
    finished_parents: torch.IntTensor
    is_finished: torch.BoolTensor
    can_improve: torch.BoolTensor

    @property
    def step(self) -> int:
        """Index of the token being chosen now (0 for the first generated token)."""
        return self.length - self.prompt_length

    def flat_running_ids(self) -> torch.LongTensor:
        """``[B * N, length]``: the running sequences in row order ``b * N + j`` (what processors see)."""
        batch, beams, _ = self.running_ids.shape
        return self.running_ids[:, :, :self.length].reshape(batch * beams, self.length)


@dataclass
class Candidates:
    """The K continuations picked at one step. Tensors ``[B, K]`` unless said otherwise.

    Attributes:
        scores: running score of the parent + the token's log-prob (float32).
        parents: the parent's beam slot ``j`` in ``0..N-1`` (int64).
        tokens: the token id (int64).
        ids: ``[B, K, W]`` the candidate sequences (the parent's ids with ``tokens`` at ``length``).
        beam_indices: ``[B, K, W - P]`` int32, the parent's ``running_parents`` plus this step's flat row.
        finished: bool, a stopping criterion fired on the candidate sequence.
    """

    scores: torch.FloatTensor
    parents: torch.LongTensor
    tokens: torch.LongTensor
    ids: torch.LongTensor
    beam_indices: torch.IntTensor
    finished: Optional[torch.BoolTensor] = None


@dataclass
class BeamStep:
    """One step as observers (the tree recorder, beam streamers) see it. Tensors ``[B, K]`` / ``[B, N]``.

    Attributes:
        step: index of the generated token (0 for the first).
        candidates: the K candidates of each prompt.
        normalised: ``[B, K]`` each candidate's length-normalised score (what it would score if finished).
        running_choice: ``[B, N]`` which candidates (indices into K) became the running beams.
        finished_choice: ``[B, N]`` which entries became the finished set: ``j < N`` is the old
            place ``j``, ``N + k`` is candidate ``k``.
        could_improve / was_full: ``[B, 1]`` before this step: the early-stopping verdict, and
            "every place finished and ``early_stopping=True``" (then nothing more may finish).
        state: the state after the step.
    """

    step: int
    candidates: Candidates
    normalised: torch.FloatTensor
    running_choice: torch.LongTensor
    finished_choice: torch.LongTensor
    could_improve: torch.BoolTensor
    was_full: torch.BoolTensor
    state: BeamState


@dataclass
class BeamResult:
    """The returned hypotheses: ``num_return_sequences`` per prompt, best first, rows ``b * nrs + i``.

    Attributes:
        sequences: ``[B * nrs, P + g]`` int64, ``g`` the longest returned hypothesis; shorter ones
            are followed by ``BeamConfig.fill_value``.
        sequences_scores: ``[B * nrs]`` float32, the length-normalised scores.
        beam_indices: ``[B * nrs, g]`` int32, the flat row each token was chosen from; -1 after the end.
        state: the final search state.
    """

    sequences: torch.LongTensor
    sequences_scores: torch.FloatTensor
    beam_indices: torch.IntTensor
    state: BeamState


# ---------------------------------------------------------------------------------------------
# The steps, in the order the loop runs them.
# ---------------------------------------------------------------------------------------------

def start(prompt_ids: torch.LongTensor, config: BeamConfig) -> BeamState:
    """The state before the first step. ``prompt_ids``: ``[B * N, P]``, each prompt repeated N times.

    The sequence buffers start with room for the first token (``W = P + 1``); :func:`make_room` widens them.
    """
    rows, prompt_length = prompt_ids.shape
    beams = config.num_beams
    batch = rows // beams
    device = prompt_ids.device
    running_ids = torch.full((batch, beams, prompt_length + 1), config.fill_value, dtype=torch.long, device=device)
    running_ids[:, :, :prompt_length] = prompt_ids.view(batch, beams, prompt_length)
    running_scores = torch.zeros((batch, beams), dtype=torch.float32, device=device)
    running_scores[:, 1:] = IMPOSSIBLE
    parents = torch.full((batch, beams, 1), -1, dtype=torch.int32, device=device)
    return BeamState(
        prompt_length=prompt_length, length=prompt_length,
        running_ids=running_ids, running_scores=running_scores, running_parents=parents,
        finished_ids=running_ids.clone(),
        finished_scores=torch.full((batch, beams), IMPOSSIBLE, dtype=torch.float32, device=device),
        finished_parents=parents.clone(),
        is_finished=torch.zeros((batch, beams), dtype=torch.bool, device=device),
        can_improve=torch.ones((batch, 1), dtype=torch.bool, device=device))


def make_room(state: BeamState, config: BeamConfig) -> None:
    """Widen the sequence buffers (doubling, never past ``max_length``) when this step's token would not fit.

    New columns hold what unwritten columns always hold: ``fill_value`` in the ids, -1 in the parents.
    """
    width, steps = state.length + 1, state.step + 1                     # what this step needs
    limit, step_limit = config.max_length, config.max_length - state.prompt_length
    state.running_ids = widened(state.running_ids, width, limit, config.fill_value)
    state.finished_ids = widened(state.finished_ids, width, limit, config.fill_value)
    state.running_parents = widened(state.running_parents, steps, step_limit, -1)
    state.finished_parents = widened(state.finished_parents, steps, step_limit, -1)


def accumulate(log_probs: torch.FloatTensor, state: BeamState) -> torch.FloatTensor:
    """``[B * N, V]`` log-probs -> ``[B, N * V]``: each continuation's running score plus its log-prob."""
    batch, beams = state.running_scores.shape
    vocab = log_probs.shape[-1]
    totals = log_probs.view(batch, beams, vocab) + state.running_scores[:, :, None]
    return totals.view(batch, beams * vocab)


def pick_candidates(totals: torch.FloatTensor, state: BeamState, config: BeamConfig) -> Candidates:
    """Step 3: K continuations per prompt, and their sequences.

    Beam search takes the K best (``torch.topk``: its order breaks ties). Beam sampling draws K
    without replacement from ``softmax(totals)`` over all ``N * V`` continuations at once (one
    ``torch.multinomial`` call, so the random stream advances as the reference's); the draws stay in
    draw order up to transformers 5.23 and are sorted by score from 5.24 on (``BEAM_SAMPLE_SORTS_DRAWS``).
    """
    k = config.candidates
    if config.do_sample:
        require_finite_scores(totals)
        flat_index = torch.multinomial(torch.softmax(totals, dim=-1), num_samples=k)
        scores = torch.gather(totals, 1, flat_index)
        if BEAM_SAMPLE_SORTS_DRAWS:
            scores, order = scores.sort(dim=-1, descending=True)
            flat_index = flat_index.gather(-1, order)
    else:
        scores, flat_index = torch.topk(totals, k)
    beams = config.num_beams
    vocab = totals.shape[-1] // beams
    parents, tokens = flat_index // vocab, flat_index % vocab

    ids = torch.take_along_dim(state.running_ids, parents[:, :, None], dim=1)            # [B, K, W]
    ids[:, :, state.length] = tokens
    beam_indices = torch.take_along_dim(state.running_parents, parents[:, :, None], dim=1)
    first_row = torch.arange(parents.shape[0], device=parents.device)[:, None] * beams
    beam_indices[:, :, state.step] = parents + first_row                                  # flat row
    return Candidates(scores=scores, parents=parents, tokens=tokens, ids=ids, beam_indices=beam_indices)


def check_finished(candidates: Candidates, state: BeamState, criteria: Callable,
                   recorded_scores: Optional[tuple]) -> torch.BoolTensor:
    """Step 4: ``[B, K]`` bool, the stopping criteria run on every candidate sequence (length + 1 tokens)."""
    batch, k, _ = candidates.ids.shape
    sequences = candidates.ids[:, :, :state.length + 1].reshape(batch * k, state.length + 1)
    return criteria(sequences, recorded_scores).view(batch, k)


def keep_running(candidates: Candidates, state: BeamState, num_beams: int) -> torch.LongTensor:
    """Step 5: the N best candidates that did not finish become the running beams.

    Finished candidates get ``-1e9`` added, so they are only kept (as dead beams that can never win)
    when fewer than N candidates are unfinished. Returns ``[B, N]`` indices into the K candidates.
    """
    scores = candidates.scores + candidates.finished.to(torch.float32) * IMPOSSIBLE
    choice = torch.topk(scores, k=num_beams)[1]
    state.running_ids = torch.take_along_dim(candidates.ids, choice[:, :, None], dim=1)
    state.running_scores = torch.take_along_dim(scores, choice, dim=1)
    state.running_parents = torch.take_along_dim(candidates.beam_indices, choice[:, :, None], dim=1)
    return choice


def normalise(scores: torch.FloatTensor, generated_length: int, length_penalty: float) -> torch.FloatTensor:
    """The length-normalised score: ``sum_logprobs / generated_length ** length_penalty``.

    ``generated_length`` counts the new tokens, eos included, never the prompt. The power is a
    Python number, as in the reference (same float rounding).
    """
    return scores / (generated_length ** length_penalty)


def is_frozen(state: BeamState, config: BeamConfig) -> Optional[torch.BoolTensor]:
    """``[B, 1]``: with ``early_stopping=True``, prompts whose N places are all finished (nothing more may
    enter); None for any other ``early_stopping`` (no prompt is ever frozen)."""
    if config.early_stopping is not True:
        return None
    return state.is_finished.all(dim=-1, keepdim=True)


def keep_finished(candidates: Candidates, state: BeamState, config: BeamConfig, top_n: torch.BoolTensor,
                  frozen: Optional[torch.BoolTensor]) -> tuple[torch.FloatTensor, torch.LongTensor]:
    """Step 6: offer the newly finished candidates to the finished set; it keeps its N best.

    A candidate may enter only if it finished, ranks among the first N of the K (the other K - N
    exist only so that N running beams survive), its prompt can still improve (``can_improve``),
    and its prompt is not ``frozen`` (``early_stopping=True`` and N finished hypotheses already). The
    others get ``-1e9`` added once per failed condition, in the reference's order (so the float32
    additions round as there). ``top_n``: ``[1, K]`` bool, True for the first N candidates.

    Returns ``(normalised [B, K], choice [B, N])``: ``choice`` indexes the old places (``< N``)
    followed by the K candidates.
    """
    newly_finished = candidates.finished & top_n
    normalised = normalise(candidates.scores, state.step + 1, config.length_penalty)
    # frozen None: the reference adds False * -1e9 = -0.0, and x + -0.0 is x for every float x: nothing to add
    offered = normalised if frozen is None else normalised + frozen.to(torch.float32) * IMPOSSIBLE
    offered = offered + (~state.can_improve).to(torch.float32) * IMPOSSIBLE
    offered = offered + (~newly_finished) * IMPOSSIBLE

    merged_scores = torch.cat((state.finished_scores, offered), dim=1)                     # [B, N + K]
    choice = torch.topk(merged_scores, k=config.num_beams)[1]
    state.finished_ids = torch.take_along_dim(
        torch.cat((state.finished_ids, candidates.ids), dim=1), choice[:, :, None], dim=1)
    state.finished_scores = torch.take_along_dim(merged_scores, choice, dim=1)
    state.finished_parents = torch.take_along_dim(
        torch.cat((state.finished_parents, candidates.beam_indices), dim=1), choice[:, :, None], dim=1)
    state.is_finished = torch.take_along_dim(torch.cat((state.is_finished, newly_finished), dim=1), choice, dim=1)
    return normalised, choice


def update_can_improve(state: BeamState, config: BeamConfig) -> None:
    """Step 8a, the early-stopping rule: can the best running beam still beat the worst finished one?

    The best running beam is scored as if it finished now (``early_stopping=False`` or a length
    penalty <= 0), or as if it finished at ``max_length`` (``early_stopping="never"`` with a
    positive length penalty: the best it could ever reach, since its log-prob sum can only fall).
    A prompt whose places are not all finished can always improve. Once False, it stays False.
    """
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = config.max_length - state.prompt_length
    else:
        best_length = state.length - state.prompt_length
    best_running = normalise(state.running_scores[:, :1], best_length, config.length_penalty)
    worst_finished = torch.where(state.is_finished, torch.min(state.finished_scores, dim=1, keepdim=True)[0],
                                 IMPOSSIBLE)
    state.can_improve = state.can_improve & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


def search_is_over(state: BeamState, finished: torch.BoolTensor, config: BeamConfig) -> bool:
    """Step 8b: stop when no prompt can improve, or (``early_stopping=True``) every place of every
    prompt is finished, or every candidate finished (max length). One host sync."""
    over = ~torch.any(state.can_improve) | torch.all(finished)
    if config.early_stopping is True:
        over = over | torch.all(state.is_finished)
    return bool(over)


def best_hypotheses(state: BeamState, num_return_sequences: int) -> BeamResult:
    """The first ``num_return_sequences`` finished hypotheses of each prompt, cut to the longest one."""
    batch, beams, width = state.finished_ids.shape
    sequences = state.finished_ids[:, :num_return_sequences].reshape(batch * num_return_sequences, width)
    scores = state.finished_scores[:, :num_return_sequences].reshape(-1)
    beam_indices = state.finished_parents[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
    generated = int((beam_indices >= 0).sum(dim=1).max())
    return BeamResult(sequences=sequences[:, :state.prompt_length + generated], sequences_scores=scores,
                      beam_indices=beam_indices[:, :generated], state=state)


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------

def beam_search(runner: ModelRunner, prompt_ids: torch.LongTensor, processors: LogitsProcessorList,
                criteria: StoppingCriteriaList, config: BeamConfig, outputs: Optional[StepOutputs] = None,
                observers: Sequence[Callable[[BeamStep], None]] = (), state: Optional[BeamState] = None) -> BeamResult:
    """Run beam search (or beam sampling, ``config.do_sample``) to the end.

    Args:
        runner: drives the model; ``prompt_ids`` rows are ``b * N + j``.
        prompt_ids: ``[B * N, P]`` int64, each (left-padded) prompt repeated N times.
        processors: applied to the ``[B * N, V]`` float32 log-probs with the running sequences
            ``[B * N, length]`` (rows in the current beam order). ``reset()`` is called first.
            After every step, a processor that declares ``follows_beams`` is told which old row each
            row now continues (``reorder(beam_rows)``, ``[B * N]`` int32), then one that declares
            ``stateful`` gets the token each row just took (``accept(tokens)``, ``[B * N]`` int64), so
            per-row state follows the beams; see docs/beam-search.md, "Processors".
        criteria: run on the ``B * K`` candidate sequences at every step.
        config: the beam knobs.
        outputs: collects scores / logits / attentions / hidden states per step, when asked for.
        observers: called with a :class:`BeamStep` after every step (the tree recorder, beam
            streamers); when there are none, nothing extra runs in the loop.
        state: a state made by :func:`start` (optional): pass one to keep the beams reached so far
            when the loop raises.

    Returns:
        :class:`BeamResult`.
    """
    if hasattr(processors, "reset"):
        processors.reset()
    reorderable = [p for p in processors if capabilities(p).follows_beams]
    accepting = [p for p in processors if capabilities(p).stateful]
    state = state if state is not None else start(prompt_ids, config)
    top_n = torch.arange(config.candidates, device=prompt_ids.device)[None, :] < config.num_beams  # [1, K]

    running_ids = prompt_ids
    logits = runner.prefill(prompt_ids)                                                 # [B * N, V] float32
    while True:
        # 1. Score: log-probs first, then the processors (the reverse of sampling's order).
        log_probs = processors(running_ids, torch.log_softmax(logits, dim=-1))
        if outputs is not None:
            outputs.record(logits, log_probs, runner.last_output)

        # 2-3. Accumulate and pick K candidates per prompt (in buffers wide enough for one more token).
        make_room(state, config)
        candidates = pick_candidates(accumulate(log_probs, state), state, config)

        # 4. Which candidates are finished.
        candidates.finished = check_finished(candidates, state, criteria,
                                              outputs.scores_so_far() if outputs is not None else None)

        # 5-6. The new running beams, and the finished set.
        could_improve, frozen = state.can_improve, is_frozen(state, config)                # before this step
        running_choice = keep_running(candidates, state, config.num_beams)
        normalised, finished_choice = keep_finished(candidates, state, config, top_n, frozen)

        # 7. Reorder the cache (and any per-row processor state) to the new running beams.
        beam_rows = state.running_parents[:, :, state.step].reshape(-1)                  # [B * N] int32
        runner.reorder(beam_rows)
        for processor in reorderable:
            processor.reorder(beam_rows)
        for processor in accepting:
            processor.accept(state.running_ids[:, :, state.length].reshape(-1))          # [B * N] int64
        state.length += 1

        # 8. Go on?
        update_can_improve(state, config)
        for observe in observers:
            was_full = frozen if frozen is not None else torch.zeros_like(could_improve)
            observe(BeamStep(state.step - 1, candidates, normalised, running_choice, finished_choice,
                             could_improve, was_full, state))
        if search_is_over(state, candidates.finished, config):
            return best_hypotheses(state, config.num_return_sequences)

        running_ids = state.flat_running_ids()                                          # [B * N, length]
        logits = runner.step(running_ids[:, -1])
