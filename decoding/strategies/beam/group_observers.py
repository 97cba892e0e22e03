"""What diverse beam search shows while it runs: the search tree, and every live beam to a beam streamer.

Both are observers of :func:`~.groups.group_beam_search`, called with a :class:`~.groups.GroupStep`
after each group's choice. The tree has the nodes of :mod:`.tree` (same fields, statuses and
meanings) plus ``group``; its nodes are the K candidates of each group at each step:

- running, ``"kept"``: one of the group's n running beams after the step (``"running when the search
  stopped"`` at the end);
- finished, ``"eos"``: it ended on eos among the group's first n candidates and is one of the
  finished hypotheses at the end; ``"max_length"`` (or ``"stopping criterion"``): it was running when the
  search stopped and is one of its group's finished hypotheses;
- pruned: ``"finished outside the first num_beams candidates"`` (eos ranked past n), ``"outranked"``
  (the group had n running beams already), ``"worse than the finished hypotheses"`` (finished, or
  running at the end, but not among its group's n best).
"""

from __future__ import annotations

from typing import Any, Optional

from .groups import GroupConfig, GroupResult, GroupStep
from .streaming import LiveBeam
from .tree import KEPT, OUTRANKED, OUTSIDE_TOP, STILL_RUNNING, WORSE

_FATES = {"kept": ("running", KEPT), "eos": ("finished", "eos"),
          "eos outside the first n": ("pruned", OUTSIDE_TOP), "not needed": ("pruned", OUTRANKED)}


class GroupTree:
    """Records the search tree of a diverse beam search (``output_beam_tree=True``)."""

    def __init__(self, batch: int, config: GroupConfig, prompt_length: int):
        self.config = config
        self.prompt_length = prompt_length
        self.nodes: list[dict[str, Any]] = [
            dict(id=b, prompt=b, group=None, parent=None, step=-1, token=None, beam_index=None, log_prob=0.0,
                 score=None, status="prompt", reason="prompt", rank=None) for b in range(batch)]
        self.running: list[list[int]] = [[b] * config.num_beams for b in range(batch)]   # node per slot

    def __call__(self, step: GroupStep) -> None:
        beams, n = self.config.num_beams, self.config.group_size
        for b, candidates in enumerate(step.candidates):
            kept = []
            for token, row, log_prob, fate in candidates:
                status, reason = _FATES[fate]
                node = dict(id=len(self.nodes), prompt=b, group=step.group, parent=self.running[b][row - b * beams],
                            step=step.step, token=token, beam_index=row, log_prob=log_prob,
                            score=log_prob / (step.step + 1) ** self.config.length_penalty,
                            status=status, reason=reason, rank=None)
                self.nodes.append(node)
                if fate == "kept":
                    kept.append(node["id"])
            if candidates:
                self.running[b][step.group * n:(step.group + 1) * n] = kept

    def finish(self, result: GroupResult) -> list[dict[str, Any]]:
        """Settle the finished and running nodes against the final hypotheses; mark the returned ones' ``rank``."""
        kept = {}                                   # (prompt, group, generated ids) -> surviving hypothesis
        for b, prompt in enumerate(result.finished):
            for g, places in enumerate(prompt):
                for hypothesis in places.hypotheses:
                    kept[(b, g, tuple(hypothesis.ids[self.prompt_length:].tolist()))] = hypothesis
        for node in self.nodes:
            if node["status"] == "finished":                # ended on eos: its hypothesis stops before the eos
                key = (node["prompt"], node["group"], tuple(self._path(node["id"])[:-1]))
                if key in kept:
                    node["hypothesis"] = kept[key]
                else:
                    node.update(status="pruned", reason=WORSE)
        n = self.config.group_size
        for b, slots in enumerate(self.running):
            for slot, node_id in enumerate(slots):
                node = self.nodes[node_id]
                if node["status"] != "running":
                    continue
                key = (b, slot // n, tuple(self._path(node_id)))
                if result.finished[b][slot // n].done:
                    node["reason"] = STILL_RUNNING
                elif key in kept:
                    at_limit = self.prompt_length + len(key[2]) >= self.config.max_length
                    node.update(status="finished", reason="max_length" if at_limit else "stopping criterion",
                                hypothesis=kept[key])
                else:
                    node.update(status="pruned", reason=WORSE)
        nrs = self.config.num_return_sequences
        for node in self.nodes:
            hypothesis = node.pop("hypothesis", None)
            ranks = [i % nrs for i, h in enumerate(result.packed.chosen) if h is hypothesis]
            if hypothesis is not None and ranks:
                node["rank"] = ranks[0]
        return self.nodes

    def _path(self, node_id: int) -> list[int]:
        tokens, node = [], self.nodes[node_id]
        while node["parent"] is not None:
            tokens.append(node["token"])
            node = self.nodes[node["parent"]]
        return tokens[::-1]


class GroupStreamAdapter:
    """Gives a beam streamer ``on_step(step, beams)`` once per step, after the last group chose.

    ``beams[b]`` lists the running beams of prompt ``b``'s groups that are not done, slot by slot
    (group by group, each best first); ``parent`` is the slot of the beam it extends.
    """

    def __init__(self, streamer: Any, config: GroupConfig, prompt_length: int):
        self.streamer = streamer
        self.config = config
        self.ids: Optional[list[list[list[int]]]] = None
        self.live: list[list[LiveBeam]] = []

    def __call__(self, step: GroupStep) -> None:
        beams, n = self.config.num_beams, self.config.group_size
        if self.ids is None:
            self.ids = [[[] for _ in range(beams)] for _ in step.candidates]
        if step.group == 0:
            self.live = [[] for _ in step.candidates]
        for b, candidates in enumerate(step.candidates):
            kept = [(token, row, score) for token, row, score, fate in candidates if fate == "kept"]
            if not kept:
                continue
            start = step.group * n
            new = [self.ids[b][row - b * beams] + [token] for token, row, _ in kept]
            for j, ((token, row, score), ids) in enumerate(zip(kept, new)):
                self.ids[b][start + j] = ids
                if not step.done[b]:
                    self.live[b].append(LiveBeam(b, start + j, ids, score, row - b * beams))
        if step.group == self.config.num_beam_groups - 1:
            self.streamer.on_step(step.step, self.live)
