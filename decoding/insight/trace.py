"""The per-step trace: why each token was chosen, recorded by an observer of the strategy contract.

``decoding.generate(..., trace=True)`` (or ``trace=Tracer(top=N)``) puts a :class:`Trace` in
``out.trace``. For every step and every row it holds:

- each processor stage of the pipeline (``"raw"``, what the strategy handed the pipeline, then one
  stage per processor): the ``top`` best candidates with their score and probability
  (``softmax`` of that stage's scores), how many tokens the stage left alive (finite score), and the
  chosen token's rank (tokens with a strictly higher score), score and probability there;
- the chosen token and the entropy (nats) of the last stage's distribution;
- with ``seed=`` and sampling, ``random``: the ``Exp(1)`` value the chosen token drew in the seeded
  exponential race (the draw picks ``argmax_i p_i / E_i``, see :mod:`decoding.seeding`); else None
  (and None under speculation, whose acceptance rule decides the tokens);
- for beam search, ``beams``: the running beams after the step (``beam`` = flat row ``b * N + j``,
  ``parent`` = flat row it extends, or the prompt index at step 0; ``score``: the sum of its
  log-probs), then the hypotheses that finished at this step (``finished: true``); each row entry is a
  running beam, with the stages of the parent row it was chosen from (``parent``); diverse and
  constrained beam search tell the tracer their running beams (:meth:`Tracer.beam_rows`);
- for speculation, ``draft``: per round and row, the drafted tokens, how many were accepted, and
  the target's own token after them (``correction``), at the step of the round's last token; the
  stages are ``raw`` (the target's logits) and ``processed`` (after the whole pipeline).

How it observes: the tracer wraps the call's pipeline (each stage's scores are kept until the step's
choice is known) and is told of every ``SequenceState.append`` (greedy, sampling, and any strategy
of yours that uses ``call.processors`` and ``call.new_state()``), of every beam step (as the search
tree is) and of every speculation round. It pairs each choice with the latest pipeline call. Off (the
default) nothing of this runs: the loop does one ``is None`` test per step.

The JSON form (:meth:`Trace.to_dict`, format ``decoding.trace/1``) is what
:func:`decoding.insight.report.render_report` draws; ``-inf`` scores are ``null`` in it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..processors import LogitsProcessorList
from ..seeding import seeded_exponentials
from . import report

FORMAT = report.FORMAT


def _json_value(value: Any) -> Any:
    """``value`` as JSON data: tensors to lists, non-finite floats to None, unknown objects to their repr."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return repr(value)


def stage_summaries(scores: torch.FloatTensor, chosen: torch.LongTensor, top: int) -> list[dict]:
    """One stage, for each row: its alive count, ``top`` candidates and the chosen token's place.

    Args:
        scores: ``[rows, vocab]`` float32, the stage's scores (``-inf`` where filtered).
        chosen: ``[rows]`` int64, each row's chosen token.
        top: how many candidates to keep, best first (ties: the lower id first).

    Returns:
        one dict per row: ``alive``, ``chosen_rank`` (None where the chosen token was filtered),
        ``chosen_logit``, ``chosen_prob`` and ``top`` (``[{"token", "logit", "prob"}, ...]``).
    """
    scores = scores.float()
    probs = torch.softmax(scores, dim=-1)
    finite = torch.isfinite(scores)
    alive = finite.sum(dim=-1)
    values, order = torch.sort(scores, dim=-1, descending=True, stable=True)
    values, order = values[:, :top], order[:, :top]
    top_probs = probs.gather(1, order)
    chosen_score = scores.gather(1, chosen[:, None]).squeeze(1)
    chosen_prob = probs.gather(1, chosen[:, None]).squeeze(1)
    rank = (scores > chosen_score[:, None]).sum(dim=-1)
    result = []
    for a, v, o, p, cs, cp, r in zip(alive.tolist(), values.tolist(), order.tolist(), top_probs.tolist(),
                                     chosen_score.tolist(), chosen_prob.tolist(), rank.tolist()):
        filtered = not math.isfinite(cs)
        result.append({"alive": a, "chosen_rank": None if filtered else r, "chosen_logit": None if filtered else cs,
                       "chosen_prob": cp,
                       "top": [{"token": t, "logit": s if math.isfinite(s) else None, "prob": q}
                               for t, s, q in zip(o, v, p)]})
    return result


def entropies(scores: torch.FloatTensor) -> list[float]:
    """The entropy (nats) of ``softmax(scores)`` for each row of ``[rows, vocab]`` float32 (0 log 0 = 0)."""
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    probs = log_probs.exp()
    return (-(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(dim=-1)).clamp(min=0.0).add(0.0).tolist()   # no -0.0


def stage_name(processor: Any) -> str:
    """A processor's name in a trace: its ``name`` (for ours, the keyword that builds it), a function's name,
    else its class name."""
    name = getattr(processor, "name", None) or getattr(processor, "__name__", None)
    return name if isinstance(name, str) else type(processor).__name__


class TracedPipeline(LogitsProcessorList):
    """The call's pipeline, keeping each stage's scores for the tracer (the processors are the same objects)."""

    def __init__(self, processors: LogitsProcessorList, tracer: "Tracer"):
        super().__init__(processors)
        self._tracer = tracer
        if hasattr(processors, "_stateful"):
            self._stateful = processors._stateful

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        stages = [scores.clone()]                   # copies: a processor may write into the scores it gets
        for processor in self:
            scores = processor(input_ids, scores)
            stages.append(scores.clone())
        self._tracer.pending = stages
        return scores


class Tracer:
    """Records a :class:`Trace` while a strategy runs; pass one as ``generate(..., trace=Tracer(top=5))``.

    Args:
        top: candidates kept per stage and row (best first).
        tokenizer: decodes token texts into the trace (``token_text``, ``prompt_text``); the call's
            ``tokenizer=`` is used when this is None.

    After the run, :attr:`trace` holds the :class:`Trace` (also ``out.trace`` with
    ``return_dict_in_generate=True``). A tracer records one run; make a new one per call.
    """

    def __init__(self, top: int = 10, tokenizer: Any = None):
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise ValueError(f"Tracer(top=...) must be an int >= 1 (candidates kept per stage), got {top!r}.")
        self.top = top
        self.tokenizer = tokenizer
        self.trace: Optional[Trace] = None
        self.pending: Optional[list] = None
        self._steps: dict[int, dict] = {}
        self._stage_names: list[str] = []
        self._call: Any = None
        self._generated: Optional[list[int]] = None

    # ---- the contract's side: attached by generate, told of every step -------------------------

    def attach(self, call: Any, strategy: str, wrap: bool = True) -> None:
        """Start recording ``call`` (a :class:`~decoding.strategies.call.PreparedCall`) run by ``strategy``.

        ``wrap``: replace ``call.processors`` by a :class:`TracedPipeline` (not for speculation, whose
        drafter may run the same pipeline: the target's stages come from each round instead).
        """
        if self._call is not None:
            raise ValueError("this Tracer has already recorded a run; pass a new Tracer() to each generate call.")
        self._call, self._strategy = call, strategy
        self._generated = [0] * call.rows
        if wrap:
            call.processors = TracedPipeline(call.processors, self)
            self._stage_names = ["raw"] + [stage_name(p) for p in call.processors]
        else:
            self._stage_names = ["raw", "processed"]

    def _step(self, index: int) -> dict:
        if index not in self._steps:
            self._steps[index] = {"step": index, "rows": [], "beams": None, "draft": None}
        return self._steps[index]

    def _rows(self, stages: list, rows: list[int], chosen: list[int], source_rows: Optional[list[int]] = None):
        """Row entries for ``rows`` from the stage tensors, each row's stages read at ``source_rows``."""
        source = rows if source_rows is None else source_rows
        index = torch.tensor(source, dtype=torch.long, device=stages[0].device)
        tokens = torch.tensor(chosen, dtype=torch.long, device=stages[0].device)
        per_stage = [stage_summaries(s.index_select(0, index), tokens, self.top) for s in stages]
        entropy = entropies(stages[-1].index_select(0, index))
        entries = []
        for k, row in enumerate(rows):
            entries.append({"row": row, "chosen": chosen[k], "entropy": entropy[k], "random": None,
                            "stages": [{"name": name, **summaries[k]}
                                       for name, summaries in zip(self._stage_names, per_stage)]})
        return entries

    def appended(self, state: Any, tokens: torch.LongTensor) -> None:
        """``SequenceState.append`` is about to write ``tokens`` (``[rows]`` int64); rows already done are skipped."""
        stages, self.pending = self.pending, None
        if stages is None or stages[0].shape[0] != tokens.shape[0]:
            return
        step = state.length - state.prompt_length
        rows = [r for r, alive in enumerate(state.unfinished.tolist()) if alive]
        if not rows:
            return
        chosen = tokens.tolist()
        entries = self._rows(stages, rows, [chosen[r] for r in rows])
        call = self._call
        if call.seeds is not None and call.settings.do_sample and len(call.seeds) == tokens.shape[0]:
            noise = seeded_exponentials(stages[-1].shape[1], call.seeds, [step] * len(call.seeds))
            for entry in entries:
                entry["random"] = float(noise[entry["row"], entry["chosen"]])
        self._step(step)["rows"].extend(entries)

    def beam_step(self, beam_step: Any) -> None:
        """A beam search step (:class:`~decoding.strategies.beam.search.BeamStep`): running beams and new finished."""
        stages, self.pending = self.pending, None
        c, step = beam_step.candidates, beam_step.step
        batch, beams = beam_step.running_choice.shape
        choice = beam_step.running_choice
        first_rows = torch.arange(batch, device=c.parents.device)[:, None] * beams
        parents = (torch.take_along_dim(c.parents, choice, dim=1) + first_rows).view(-1)
        tokens = torch.take_along_dim(c.tokens, choice, dim=1).view(-1).tolist()
        scores = torch.take_along_dim(c.scores, choice, dim=1).view(-1).tolist()
        parents = parents.tolist()
        entry = self._step(step)
        if stages is not None:
            entry["rows"] = self._rows(stages, list(range(batch * beams)), tokens, parents)
            for row, parent in zip(entry["rows"], parents):
                row["parent"] = parent
        live = [{"beam": r, "parent": (r // beams if step == 0 else parents[r]), "token": tokens[r],
                 "score": scores[r], "finished": False} for r in range(batch * beams)]
        finished = beam_step.finished_choice.tolist()
        for b in range(batch):
            for place in finished[b]:
                if place >= beams:                          # candidate place - N finished at this step
                    k = place - beams
                    parent = int(c.parents[b, k]) + b * beams
                    live.append({"beam": len(live), "parent": b if step == 0 else parent, "token": int(c.tokens[b, k]),
                                 "score": float(c.scores[b, k]), "normalised": float(beam_step.normalised[b, k]),
                                 "finished": True})
        entry["beams"] = live

    def beam_rows(self, step: int, tokens: torch.LongTensor, parents: torch.LongTensor, scores: torch.FloatTensor,
                  stages: Optional[list] = None) -> None:
        """A beam loop's step (diverse or constrained beam search): row ``r`` now continues row ``parents[r]``
        with ``tokens[r]`` at running score ``scores[r]`` (``[B * N]`` each). ``stages``: ``[(name, [B * N, V])]``
        to use instead of the pipeline's (a loop that runs the pipeline once per group passes its own)."""
        if stages is None:
            stages, self.pending = self.pending, None
        else:
            self.pending = None
            self._stage_names = [name for name, _ in stages]
            stages = [tensor for _, tensor in stages]
        tokens, parents, scores = tokens.tolist(), parents.tolist(), scores.tolist()
        beams = max(int(self._call.settings.num_beams), 1)
        entry = self._step(step)
        if stages is not None:
            entry["rows"] = self._rows(stages, list(range(len(tokens))), tokens, parents)
            for row, parent in zip(entry["rows"], parents):
                row["parent"] = parent
        entry["beams"] = [{"beam": r, "parent": parents[r] // beams if step == 0 else parents[r], "token": tokens[r],
                           "score": scores[r], "finished": False} for r in range(len(tokens))]

    def speculation_round(self, draft: Any, tokens: torch.LongTensor, keep: torch.LongTensor,
                          scores: torch.FloatTensor, logits: torch.FloatTensor) -> None:
        """One speculation round: row ``r`` kept ``tokens[r, :keep[r]]``; ``scores``/``logits`` ``[rows, g + 1, V]``."""
        keep_list, counts, chosen = keep.tolist(), draft.counts.tolist(), tokens.tolist()
        drafted = draft.tokens.tolist()
        for r, k in enumerate(keep_list):
            if k <= 0:
                continue
            start = self._generated[r]
            for i in range(k):
                stages = [logits[r:r + 1, i], scores[r:r + 1, i]]
                entry = self._rows(stages, [r], [chosen[r][i]], [0])
                self._step(start + i)["rows"].extend(entry)
            accepted = min(k - 1, counts[r])
            round_ = {"row": r, "drafted": drafted[r][:counts[r]], "accepted": accepted,
                      "correction": chosen[r][accepted] if accepted < k else None}
            last = self._step(start + k - 1)
            last["draft"] = (last["draft"] or []) + [round_]
            self._generated[r] += k

    # ---- the result --------------------------------------------------------------------------

    def finish(self, out: Any) -> "Trace":
        """The :class:`Trace` of the run (``out``: its ``GenerateOutput``; ``out.trace``'s entries are kept)."""
        call = self._call
        tokenizer = self.tokenizer if self.tokenizer is not None else call.tokenizer
        mask = call.attention_mask.bool()
        prompt = [ids[m].tolist() for ids, m in zip(call.input_ids, mask)]
        steps = [self._steps[i] for i in sorted(self._steps)]
        for step in steps:
            step["rows"].sort(key=lambda e: e["row"])
        settings = {name: _json_value(value) for name, value in call.settings.values.items() if value is not None}
        data = {"format": FORMAT, "strategy": self._strategy, "stages": list(self._stage_names), "top": self.top,
                "prompt": prompt, "prompt_length": call.prompt_length, "seeds": call.seeds,
                "settings": settings, "steps": steps}
        if tokenizer is not None:
            seen = {t for p in prompt for t in p}
            for step in steps:
                for e in step["rows"]:
                    seen.add(e["chosen"])
                    seen.update(c["token"] for s in e["stages"] for c in s["top"])
                for b in step["beams"] or []:
                    seen.add(b["token"])
                for d in step["draft"] or []:
                    seen.update(d["drafted"])
            data["token_text"] = {str(t): tokenizer.decode([t]) for t in sorted(seen)}
            data["prompt_text"] = [tokenizer.decode(p) for p in prompt]
        extras = dict(out.trace) if isinstance(getattr(out, "trace", None), dict) else {}
        self.trace = Trace(data, extras)
        return self.trace


class Trace:
    """What a traced run recorded (see the module's docstring for the fields); ``out.trace`` after ``trace=True``.

    ``trace.steps`` is the list of steps (dicts); :meth:`table` prints one; :meth:`to_dict`,
    :meth:`to_json` and :meth:`from_json` round-trip the JSON form; in a notebook the trace shows as
    the visual report (:mod:`decoding.insight.report`). The strategy's own records (``"beam_tree"``,
    ``"speculation"``) stay reachable as ``trace["beam_tree"]``.
    """

    def __init__(self, data: dict, extras: Optional[dict] = None):
        report._check(data, "data")
        self.data = data
        self.extras = extras or {}

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    @property
    def strategy(self) -> str:
        return self.data.get("strategy")

    def row(self, row: int) -> list[dict]:
        """Row ``row``'s entries, one per step in which it chose a token (in step order)."""
        return [e for step in self.steps for e in step["rows"] if e["row"] == row]

    def chosen(self, row: int) -> list[int]:
        """The tokens row ``row`` chose, in order (for beams: the running beam in that slot at each step)."""
        return [e["chosen"] for e in self.row(row)]

    # the strategy's own records, as out.trace was before tracing existed
    def __getitem__(self, key: str) -> Any:
        if key in self.extras:
            return self.extras[key]
        raise KeyError(f"{key!r}: this trace holds {sorted(self.extras)} besides its steps (trace.steps)")

    def __contains__(self, key: str) -> bool:
        return key in self.extras

    def keys(self) -> list[str]:
        return list(self.extras)

    def _text(self, token: int) -> str:
        text = (self.data.get("token_text") or {}).get(str(token))
        return f"[{token}]" if text is None else repr(text)

    def table(self, step: int, row: Optional[int] = None) -> str:
        """Step ``step`` as text: for each row (or only ``row``), the chosen token and each stage's candidates.

        Raises:
            IndexError: the trace has no such step.
        """
        found = [s for s in self.steps if s["step"] == step]
        if not found:
            raise IndexError(f"the trace has no step {step}; its steps are 0..{len(self.steps) - 1}.")
        lines = [f"step {step} ({self.strategy})"]
        for entry in found[0]["rows"]:
            if row is not None and entry["row"] != row:
                continue
            random = "" if entry.get("random") is None else f", random {entry['random']:.4f}"
            parent = "" if entry.get("parent") is None else f", from row {entry['parent']}"
            entropy = "?" if entry.get("entropy") is None else f"{entry['entropy']:.3f}"
            lines.append(f"row {entry['row']}: chose {self._text(entry['chosen'])} (id {entry['chosen']}), "
                         f"entropy {entropy} nats{random}{parent}")
            for stage in entry["stages"]:
                rank = "filtered" if stage["chosen_rank"] is None else f"rank {stage['chosen_rank']}"
                lines.append(f"  {stage['name']}: alive {stage['alive']}, chosen {rank}, p={stage['chosen_prob']:.4f}")
                for k, c in enumerate(stage["top"]):
                    logit = "-inf" if c["logit"] is None else f"{c['logit']:.4f}"
                    mark = "*" if c["token"] == entry["chosen"] else " "
                    lines.append(f"   {mark}{k:>3} {self._text(c['token']):>14} {c['token']:>7} {logit:>10} "
                                 f"{c['prob']:.4f}")
        for b in found[0].get("beams") or []:
            lines.append(f"beam {b['beam']}: token {self._text(b['token'])} from {b['parent']}, score "
                         f"{b['score']:.4f}" + (" finished" if b.get("finished") else ""))
        for d in found[0].get("draft") or []:
            lines.append(f"draft row {d['row']}: {d['drafted']} accepted {d['accepted']}, then {d['correction']}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The JSON form (format ``decoding.trace/1``): plain dicts, lists, numbers, strings and None."""
        return _json_value(self.data)

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """The JSON text of :meth:`to_dict` (written to ``path`` too when given)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "Trace":
        return cls(data)

    @classmethod
    def from_json(cls, text_or_path: Union[str, Path]) -> "Trace":
        """A trace from :meth:`to_json`'s text, or from a file holding it."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        return cls(json.loads(text))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Trace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        rows = len({e["row"] for s in self.steps for e in s["rows"]})
        return f"Trace(strategy={self.strategy!r}, steps={len(self.steps)}, rows={rows}, stages={self.data['stages']})"

    def _repr_html_(self) -> str:
        return report.render_report(self.to_dict())

    def write_report(self, path: Union[str, Path], title: Optional[str] = None) -> Path:
        """The visual report of this trace as one self-contained HTML file (:func:`report.write_report`)."""
        return report.write_report(path, self.to_dict(), title=title)
