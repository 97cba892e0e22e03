"""Where two runs part ways: ``decoding.diff(a, b)`` over two outputs or two traces.

Each side is a :class:`~decoding.outputs.GenerateOutput` (or the reference's output object: anything
with ``sequences`` and, for scores, ``scores`` / ``logits``), a :class:`~decoding.insight.trace.Trace`,
or a recorded run of :mod:`decoding.replay` (its output).
:func:`diff` walks the steps in order and, at each step, the rows in order, and reports:

- ``identical``: the same rows, the same tokens, the same lengths (padding after a row's end ignored);
- else the first divergence: ``step`` and ``row``, both tokens (None where that side had already
  ended), their score and probability on both sides under the distribution each side chose from, each
  side's ``gap`` (the score of its own token minus the other's there), and the first processor stage
  whose scores differ (``stage``, at ``stage_step``/``stage_row``, which may be earlier than the token
  divergence). A score that is ``-inf`` on one side and finite on the other (a token filtered on one
  side only) is a difference of ``inf``, never skipped.

Stages: an output gives two, ``raw`` (``out.logits``) and ``processed`` (``out.scores``), when it
recorded them; a trace gives every stage of its pipeline, compared on what it kept (the alive count,
the top candidates, the chosen token). Stages are matched by name (the k-th stage of a name with the
k-th of that name on the other side), in the first side's order; the last stages of the two sides
(the distributions each chose from) are always compared, so a processor present on one side only
still shows (under the name of the longer pipeline's last stage).

Rows end: a trace holds no entry after a row's end; an output's tokens after the row's first
``eos_token_id`` are padding (give ``eos_token_id`` to :func:`diff`, or it is read from a trace's
settings). Row counts that differ are compared over the rows both have, and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from ..outputs import is_output
from .trace import Trace

TOLERANCE = 1e-5


class _Stage:
    """One stage of one row at one step: a full score vector (an output) or a trace's summary."""

    def __init__(self, name: str, vector: Optional[torch.Tensor] = None, summary: Optional[dict] = None,
                 chosen: Optional[int] = None):
        self.name, self.vector, self.summary, self.chosen = name, vector, summary, chosen
        if vector is not None:
            self._probs = torch.softmax(vector.float(), dim=-1)

    def score(self, token: Optional[int]) -> Optional[float]:
        """The token's score (``-inf`` where filtered), or None when this side does not know it."""
        if token is None:
            return None
        if self.vector is not None:
            return float(self.vector[token]) if 0 <= token < self.vector.shape[0] else None
        if token == self.chosen:
            value = self.summary.get("chosen_logit")
            return -math.inf if value is None else value
        for c in self.summary.get("top") or []:
            if c["token"] == token:
                return -math.inf if c["logit"] is None else c["logit"]
        return None

    def prob(self, token: Optional[int]) -> Optional[float]:
        if token is None:
            return None
        if self.vector is not None:
            return float(self._probs[token]) if 0 <= token < self.vector.shape[0] else None
        if token == self.chosen:
            return self.summary.get("chosen_prob")
        for c in self.summary.get("top") or []:
            if c["token"] == token:
                return c["prob"]
        return None

    def difference(self, other: "_Stage") -> float:
        """How far apart two stages are: the largest score difference (``inf`` where one side filtered a token
        the other kept, or a trace's alive count or top candidates differ)."""
        if self.vector is not None and other.vector is not None:
            a, b = self.vector.float(), other.vector.float()
            if a.shape != b.shape:
                return math.inf
            fa, fb = torch.isfinite(a), torch.isfinite(b)
            if not torch.equal(fa, fb):
                return math.inf
            return float((a[fa] - b[fa]).abs().max()) if bool(fa.any()) else 0.0
        # at least one trace summary: compare on the tokens both know (the top candidates, the chosen ones)
        largest = 0.0
        if self.summary is not None and other.summary is not None:
            if self.summary.get("alive") != other.summary.get("alive"):
                return math.inf
            tops = [c["token"] for c in self.summary.get("top") or []]
            if tops != [c["token"] for c in other.summary.get("top") or []]:
                largest = math.inf
        tokens = {t for t in (self.chosen, other.chosen) if t is not None}
        for s in (self.summary, other.summary):
            tokens.update(c["token"] for c in (s or {}).get("top") or [])
        for token in tokens:
            x, y = self.score(token), other.score(token)
            if x is None or y is None:
                continue
            if math.isinf(x) or math.isinf(y):
                if x != y:
                    return math.inf
                continue
            largest = max(largest, abs(x - y))
        return largest


class _Side:
    """One run seen as ``token(row, step)`` and ``stages(row, step)``."""

    def __init__(self, run: Any, prompt_length: Optional[int], eos_token_id: Any):
        if is_output(getattr(run, "output", None)):      # a decoding.replay.Run
            run = run.output
        self.trace = run if isinstance(run, Trace) else getattr(run, "trace", None)
        self.trace = self.trace if isinstance(self.trace, Trace) else None
        self.output = None if isinstance(run, Trace) else run
        if self.output is not None and not hasattr(self.output, "sequences"):
            raise TypeError(f"diff compares outputs (return_dict_in_generate=True) or traces, got "
                            f"{type(run).__name__}; pass return_dict_in_generate=True.")
        if eos_token_id is None and self.trace is not None:
            eos_token_id = self.trace.data.get("settings", {}).get("eos_token_id")
        self.eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        if self.output is not None:
            if prompt_length is None:
                prompt_length = (self.trace.data["prompt_length"] if self.trace is not None
                                 else self.output.sequences.shape[1] - len(self.output.scores or self.output.logits
                                                                           or ()))
            self.prompt_length = prompt_length
            self.rows = self.output.sequences.shape[0]
            self.tokens = [self._until_eos(r) for r in range(self.rows)]
        else:
            self.rows = len(self.trace.data["prompt"])
            self.tokens = [self.trace.chosen(r) for r in range(self.rows)]
        self.steps = max((len(t) for t in self.tokens), default=0)

    def _until_eos(self, row: int) -> list[int]:
        tokens = self.output.sequences[row, self.prompt_length:].tolist()
        for i, t in enumerate(tokens):
            if t in self.eos:
                return tokens[:i + 1]
        return tokens

    def token(self, row: int, step: int) -> Optional[int]:
        tokens = self.tokens[row]
        return tokens[step] if step < len(tokens) else None

    def final(self, row: int, step: int) -> Optional[_Stage]:
        """The distribution the row chose from, whole (an output's processed scores), else its last traced stage."""
        full = [s for s in self._output_stages(row, step) if s.name == "processed"] if self.output is not None else []
        if full:
            return full[0]
        stages = self.stages(row, step)
        return stages[-1] if stages else None

    def stages(self, row: int, step: int) -> list[_Stage]:
        if self.trace is not None:
            entries = [e for s in self.trace.steps if s["step"] == step for e in s["rows"] if e["row"] == row]
            if entries:
                return [_Stage(st["name"], summary=st, chosen=entries[0]["chosen"]) for st in entries[0]["stages"]]
            return []
        return self._output_stages(row, step)

    def _output_stages(self, row: int, step: int) -> list[_Stage]:
        out, stages = self.output, []
        beam_indices = getattr(out, "beam_indices", None)
        source = row if beam_indices is None else int(beam_indices[row, step]) if step < beam_indices.shape[1] else -1
        if source < 0:
            return []
        for name, tensors in (("raw", getattr(out, "logits", None)), ("processed", getattr(out, "scores", None))):
            if tensors is not None and step < len(tensors) and source < tensors[step].shape[0]:
                stages.append(_Stage(name, vector=tensors[step][source]))
        return stages


@dataclass
class Divergence:
    """The outcome of :func:`diff` (see the module's docstring).

    Attributes:
        identical: same rows, same tokens, same lengths.
        step, row: where the chosen tokens first differ (earliest step, then lowest row); None when identical.
        token_a, token_b: the two tokens there (None: that side's row had ended).
        a, b: on each side, ``{"token_a": {"score", "prob"}, "token_b": {...}}`` under the last stage
            (the distribution that side chose from); a value is None where the side did not record it.
        gap_a, gap_b: on each side, its own token's score minus the other token's (None if unknown).
        stage, stage_step, stage_row: the first stage whose scores differ (at or before the divergence),
            or None when every compared stage agreed.
        max_score_difference: the largest stage difference over the steps before the divergence (``inf``
            where a token was filtered on one side only).
        rows_a, rows_b: the row counts; only ``min`` of them is compared.
        steps_a, steps_b: the longest row of each side, in generated tokens.
    """

    identical: bool
    step: Optional[int] = None
    row: Optional[int] = None
    token_a: Optional[int] = None
    token_b: Optional[int] = None
    a: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)
    gap_a: Optional[float] = None
    gap_b: Optional[float] = None
    stage: Optional[str] = None
    stage_step: Optional[int] = None
    stage_row: Optional[int] = None
    max_score_difference: float = 0.0
    rows_a: int = 0
    rows_b: int = 0
    steps_a: int = 0
    steps_b: int = 0

    def summary(self) -> str:
        """One line: identical, or where the two runs first differ and which stage differed first."""
        rows = "" if self.rows_a == self.rows_b else f" (rows differ: {self.rows_a} vs {self.rows_b})"
        stage = ("" if self.stage is None else
                 f"; scores first differ at stage {self.stage!r} (step {self.stage_step}, row {self.stage_row})")
        if self.identical:
            return (f"identical: {self.rows_a} row(s), {self.steps_a} steps; largest score difference "
                    f"{self.max_score_difference:.2e}{stage}")
        if self.step is None:
            return f"different row counts: {self.rows_a} vs {self.rows_b}, the common rows identical{stage}"
        return (f"diverge at step {self.step}, row {self.row}: {_name(self.token_a)} vs {_name(self.token_b)}"
                f"{rows}{stage}")

    def table(self) -> str:
        """The divergence as a small table: each token's score and probability on both sides, and the gaps."""
        lines = [self.summary()]
        if self.step is None:
            return "\n".join(lines)
        lines.append(f"{'':12}{'side a':>24}{'side b':>24}")
        for key, token in (("token_a", self.token_a), ("token_b", self.token_b)):
            cells = []
            for side in (self.a, self.b):
                v = side.get(key) or {}
                cells.append(f"{_num(v.get('score'))} p={_num(v.get('prob'))}")
            lines.append(f"{_name(token):>12}{cells[0]:>24}{cells[1]:>24}")
        lines.append(f"{'gap':>12}{_num(self.gap_a):>24}{_num(self.gap_b):>24}")
        lines.append(f"largest score difference before step {self.step}: {self.max_score_difference:.2e}")
        return "\n".join(lines)


def _name(token: Optional[int]) -> str:
    return "(ended)" if token is None else f"token {token}"


def _num(x: Optional[float]) -> str:
    if x is None:
        return "?"
    return "-inf" if x == -math.inf else f"{x:.4f}"


def _values(last: Optional[_Stage], token_a: Optional[int], token_b: Optional[int]) -> dict:
    if last is None:
        return {}
    return {key: {"score": last.score(t), "prob": last.prob(t)} for key, t in (("token_a", token_a),
                                                                            ("token_b", token_b))}


def _gap(values: dict, own: str, other: str) -> Optional[float]:
    x, y = (values.get(own) or {}).get("score"), (values.get(other) or {}).get("score")
    if x is None or y is None:
        return None
    if math.isinf(x) and math.isinf(y):
        return 0.0 if x == y else x - y
    return x - y


def _by_name(stages: Sequence[_Stage]) -> dict:
    """``{(name, k): stage}``: the k-th stage of that name (a pipeline may hold a processor twice), in order."""
    keyed, seen = {}, {}
    for stage in stages:
        seen[stage.name] = seen.get(stage.name, -1) + 1
        keyed[(stage.name, seen[stage.name])] = stage
    return keyed


def diff(a: Any, b: Any, *, prompt_length: Optional[int] = None, eos_token_id: Union[int, Sequence[int], None] = None,
         tolerance: float = TOLERANCE) -> Divergence:
    """The first divergence between two runs (outputs or traces; see the module's docstring).

    Args:
        a, b: ``GenerateOutput`` (``return_dict_in_generate=True``; with ``output_scores`` /
            ``output_logits`` for the stages), the reference's output, or ``Trace``; an output whose
            ``trace`` is a Trace is compared through its trace's stages.
        prompt_length: the padded prompt length of the outputs (default: a trace's, else inferred from
            the number of recorded steps).
        eos_token_id: tokens after a row's first of these are padding (default: a trace's setting).
        tolerance: stage scores closer than this are equal.

    Raises:
        TypeError: a side is neither an output with ``sequences`` nor a Trace.
    """
    side_a, side_b = _Side(a, prompt_length, eos_token_id), _Side(b, prompt_length, eos_token_id)
    rows = min(side_a.rows, side_b.rows)
    result = Divergence(identical=False, rows_a=side_a.rows, rows_b=side_b.rows, steps_a=side_a.steps,
                        steps_b=side_b.steps)
    for step in range(max(side_a.steps, side_b.steps)):
        for row in range(rows):
            ta, tb = side_a.token(row, step), side_b.token(row, step)
            if ta is None and tb is None:
                continue
            stages_a, stages_b = side_a.stages(row, step), side_b.stages(row, step)
            by_name = _by_name(stages_b)
            pairs = [(stage, by_name[key]) for key, stage in _by_name(stages_a).items() if key in by_name]
            if stages_a and stages_b and (stages_a[-1], stages_b[-1]) not in pairs:
                # the distributions chosen from, always compared (named after the longer pipeline's last stage)
                last = stages_a[-1] if len(stages_a) >= len(stages_b) else _Stage(
                    stages_b[-1].name, stages_a[-1].vector, stages_a[-1].summary, stages_a[-1].chosen)
                pairs.append((last, stages_b[-1]))
            for stage, other in pairs:
                gap = stage.difference(other)
                if gap > tolerance and result.stage is None:
                    result.stage, result.stage_step, result.stage_row = stage.name, step, row
                if result.step is None:
                    result.max_score_difference = max(result.max_score_difference, gap) if ta == tb else \
                        result.max_score_difference
            if ta != tb and result.step is None:
                result.step, result.row, result.token_a, result.token_b = step, row, ta, tb
                result.a = _values(side_a.final(row, step), ta, tb)
                result.b = _values(side_b.final(row, step), ta, tb)
                result.gap_a = _gap(result.a, "token_a", "token_b")
                result.gap_b = _gap(result.b, "token_b", "token_a")
        if result.step is not None:
            break
    result.identical = result.step is None and side_a.rows == side_b.rows
    return result
