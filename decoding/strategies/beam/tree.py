"""The beam search tree as plain data: every hypothesis the search considered, and what became of it.

``decoding.generate(..., num_beams=4, return_dict_in_generate=True, output_beam_tree=True)`` puts a
list of dicts in ``out.trace["beam_tree"]``, one per node (JSON-serialisable):

=============== =====================================================================================
``id``          the node's index in the list
``prompt``      index of its prompt in the batch
``parent``      ``id`` of the hypothesis it extends (None for a prompt's root)
``step``        index of its last token among the generated ones (0 for the first; -1 for the root)
``token``       its last token (None for the root)
``beam_index``  the flat row ``b * num_beams + slot`` of its parent at that step: the row of
                ``out.scores[step]`` its token's log-prob comes from (None for the root)
``log_prob``    the sum of the processed log-probs of its tokens (0.0 for the root)
``score``       ``log_prob / (step + 1) ** length_penalty``, its score if it finishes here
``status``      "prompt" (root), "running", "finished" or "pruned"
``reason``      why (see below)
``rank``        for the returned hypotheses, their rank (0 = best, as in ``out.sequences``); else None
=============== =====================================================================================

Nodes are the K candidates picked per prompt at each step (``K = max(2, 1 + n_eos) * num_beams``);
the other ``num_beams * vocab - K`` continuations are never considered and are not listed.

Reasons:

- running: ``"kept"`` (one of the ``num_beams`` best unfinished candidates; the next step extends
  it), or ``"running when the search stopped"``.
- finished: ``"eos"``, ``"max_length"`` or ``"stopping criterion"`` (another criterion fired).
- pruned: ``"outranked"`` (unfinished, not among the ``num_beams`` best unfinished candidates);
  ``"finished outside the first num_beams candidates"``; ``"worse than the finished hypotheses"``;
  ``"search over for this prompt"`` (no running beam could beat its worst finished hypothesis any
  more); ``"early stopping: prompt already had num_beams finished"``; ``"displaced by a better
  finished hypothesis"`` (it was finished, a better one took its place later).

The final sequences are paths in the tree (follow ``parent`` from a ranked node to the root), and
each node's ``log_prob`` is its parent's plus ``out.scores[step][beam_index, token]``. Recording
costs one host transfer per step; nothing is recorded unless asked for.
"""

from __future__ import annotations

from typing import Any, Optional

from .search import BeamConfig, BeamStep

KEPT = "kept"
STILL_RUNNING = "running when the search stopped"
OUTRANKED = "outranked"
OUTSIDE_TOP = "finished outside the first num_beams candidates"
WORSE = "worse than the finished hypotheses"
SEARCH_OVER = "search over for this prompt"
EARLY_STOPPED = "early stopping: prompt already had num_beams finished"
DISPLACED = "displaced by a better finished hypothesis"


class BeamTree:
    """Records the tree, step by step, from the :class:`BeamStep` the loop gives its observers.

    Args:
        batch: number of prompts.
        config: the search's knobs (num_beams, length penalty, eos, max_length).
        prompt_length: padded prompt length.
    """

    def __init__(self, batch: int, config: BeamConfig, prompt_length: int):
        self.config = config
        self.prompt_length = prompt_length
        self.eos = set(config.eos_token_ids.tolist()) if config.eos_token_ids is not None else set()
        self.nodes: list[dict[str, Any]] = [
            dict(id=b, prompt=b, parent=None, step=-1, token=None, beam_index=None, log_prob=0.0, score=None,
                 status="prompt", reason="prompt", rank=None) for b in range(batch)]
        beams = config.num_beams
        self.running: list[list[int]] = [[b] * beams for b in range(batch)]          # node id per running slot
        self.finished: list[list[Optional[int]]] = [[None] * beams for _ in range(batch)]

    def _finished_reason(self, token: int, step: int) -> str:
        if token in self.eos:
            return "eos"
        if self.prompt_length + step + 1 >= self.config.max_length:
            return "max_length"
        return "stopping criterion"

    def __call__(self, step: BeamStep) -> None:
        beams = self.config.num_beams
        cand = step.candidates
        tokens, parents, scores = cand.tokens.tolist(), cand.parents.tolist(), cand.scores.tolist()
        finished, normalised = cand.finished.tolist(), step.normalised.tolist()
        running_choice, finished_choice = step.running_choice.tolist(), step.finished_choice.tolist()
        could_improve, was_full = step.could_improve[:, 0].tolist(), step.was_full[:, 0].tolist()
        is_finished = step.state.is_finished.tolist()
        for b in range(len(tokens)):
            new_ids = []
            for k, token in enumerate(tokens[b]):
                parent_slot = parents[b][k]
                if finished[b][k]:
                    if k >= beams:
                        status, reason = "pruned", OUTSIDE_TOP
                    elif (beams + k) in finished_choice[b]:
                        status, reason = "finished", self._finished_reason(token, step.step)
                    elif not could_improve[b]:
                        status, reason = "pruned", SEARCH_OVER
                    elif was_full[b]:
                        status, reason = "pruned", EARLY_STOPPED
                    else:
                        status, reason = "pruned", WORSE
                elif k in running_choice[b]:
                    status, reason = "running", KEPT
                else:
                    status, reason = "pruned", OUTRANKED
                node = dict(id=len(self.nodes), prompt=b, parent=self.running[b][parent_slot], step=step.step,
                            token=token, beam_index=b * beams + parent_slot, log_prob=scores[b][k],
                            score=normalised[b][k], status=status, reason=reason, rank=None)
                self.nodes.append(node)
                new_ids.append(node["id"])
            old = self.finished[b]
            for j, node_id in enumerate(old):
                if node_id is not None and j not in finished_choice[b] and self.nodes[node_id]["status"] == "finished":
                    self.nodes[node_id].update(status="pruned", reason=DISPLACED)
            self.finished[b] = [(old[c] if c < beams else new_ids[c - beams]) if is_finished[b][i] else None
                                for i, c in enumerate(finished_choice[b])]
            self.running[b] = [new_ids[c] for c in running_choice[b]]

    def finish(self, num_return_sequences: int) -> list[dict[str, Any]]:
        """Mark the returned hypotheses (``rank``) and the beams still running; return the node list."""
        for running in self.running:
            for node_id in running:
                if self.nodes[node_id]["status"] == "running":
                    self.nodes[node_id]["reason"] = STILL_RUNNING
        for finished in self.finished:
            for rank, node_id in enumerate(finished[:num_return_sequences]):
                if node_id is not None:
                    self.nodes[node_id]["rank"] = rank
        return self.nodes


def path(nodes: list[dict[str, Any]], node_id: int) -> list[int]:
    """The tokens from the root to ``node_id`` (the hypothesis's generated ids)."""
    tokens = []
    node = nodes[node_id]
    while node["parent"] is not None:
        tokens.append(node["token"])
        node = nodes[node["parent"]]
    return tokens[::-1]


def returned(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The returned hypotheses' nodes, in the row order of ``out.sequences`` (prompt, then rank)."""
    ranked = [n for n in nodes if n["rank"] is not None]
    return sorted(ranked, key=lambda n: (n["prompt"], n["rank"]))

