"""The visual report of a trace: one self-contained HTML file (no network, no external assets).

It renders a trace in its JSON form (``trace.to_dict()``, the ``decoding.trace/1`` format):

- the generated text of each row, each token coloured by the probability the final distribution
  gave it (red: unlikely, green: likely; a legend says so), after the prompt in grey;
- a click on a token (or Enter on a focused one) shows its step: the chosen token, the entropy, the
  random value of a seeded draw, and the candidate table of every processor stage side by side
  (rank, token, raw score, probability; the stage's alive count and the chosen token's rank);
- for beam search, the beam tree as nested lists (each live beam under the beam it extends);
- for speculation, each round's drafted tokens, the accepted ones green, the rejected ones struck
  out, the correction after them;
- for a diff, the two runs side by side with the first divergence marked in each row.

:func:`render_report` returns the report as one ``<div>`` (its style and script inside it), which is
what a notebook shows (``Trace._repr_html_``); :func:`write_report` wraps it in an HTML document.
The tokens and tables are built from the trace's data: every text is escaped (HTML by
:func:`html.escape`, the embedded JSON with ``<``, ``>`` and ``&`` as ``\\u`` escapes, and the script
writes texts with ``textContent``), so a token such as ``</script>`` shows as itself.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from pathlib import Path
from typing import Any, Optional, Union

FORMAT = "decoding.trace/1"

_counter = itertools.count()

_STYLE = """
.dr{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;max-width:1200px}
.dr h2{font-size:18px;margin:0 0 6px}.dr h3{font-size:15px;margin:16px 0 6px}
.dr .meta{color:#555;margin-bottom:8px}.dr .chip{display:inline-block;border:1px solid #c9cfdb;border-radius:10px;
padding:0 7px;margin:0 3px 3px 0;font-size:12px;background:#f4f6fa}
.dr .legend{display:flex;align-items:center;gap:6px;font-size:12px;color:#444;margin:6px 0 10px}
.dr .scale{width:180px;height:12px;border:1px solid #bbb;
background:linear-gradient(90deg,hsl(0,75%,80%),hsl(30,75%,80%),hsl(60,75%,80%),hsl(90,75%,80%),hsl(120,75%,80%))}
.dr .text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:13px;line-height:1.9;border:1px solid #e1e4ea;border-radius:6px;padding:8px;background:#fff}
.dr .prompt{color:#8a8f99}.dr .tok{cursor:pointer;border-radius:3px;padding:1px 0;outline-offset:1px}
.dr .tok:hover,.dr .tok:focus{outline:2px solid #3b6fd8}.dr .tok.sel{outline:2px solid #1d2330}
.dr .tok.div{outline:2px dashed #d11;outline-offset:2px}.dr .tok.after{opacity:.45}
.dr .rowlabel{font-size:12px;color:#666;margin:8px 0 2px}
.dr .side{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.dr .panel{border:1px solid #c9cfdb;border-radius:6px;padding:8px;margin-top:12px;background:#fafbfd}
.dr .stages{display:flex;gap:10px;overflow-x:auto}
.dr table{border-collapse:collapse;font-size:12px}.dr td,.dr th{padding:1px 6px;text-align:right;
border-bottom:1px solid #eceef2}.dr th{background:#eef1f6}.dr td.t{text-align:left;font-family:ui-monospace,monospace;
white-space:pre}.dr tr.chosen td{background:#ffe9a8;font-weight:600}.dr .stagehead{font-size:12px;margin-bottom:3px}
.dr ul.tree{list-style:none;padding-left:18px;margin:2px 0;border-left:1px dotted #bbb}
.dr ul.tree li{margin:1px 0}.dr .fin{color:#0a7a2f;font-weight:600}
.dr .acc{background:hsl(120,60%,85%)}.dr .rej{background:hsl(0,70%,88%);text-decoration:line-through}
.dr .cor{background:hsl(215,80%,88%)}.dr .drafts td,.dr .drafts th{text-align:left}
.dr .hint{font-size:12px;color:#666}
"""

_SCRIPT = r"""
(function(){
  var root = document.getElementById(ROOT_ID);
  var data = JSON.parse(root.querySelector('script.dr-data').textContent);
  var panel = root.querySelector('.panel');
  function text(run, id){
    var t = run.token_text && run.token_text[String(id)];
    return (t === null || t === undefined) ? '[' + id + ']' : t;
  }
  function shown(s){
    if (s === '') return '\u2205';
    return s.replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5').replace(/ /g, '\u00b7')
      .replace(/[\x00-\x1f]/g, function(c){ return String.fromCharCode(0x2400 + c.charCodeAt(0)); })
      .replace(/\x7f/g, '\u2421');
  }
  function num(x, d){ return (x === null || x === undefined) ? '\u2013' : Number(x).toFixed(d); }
  function el(tag, cls, txt){ var e = document.createElement(tag); if (cls) e.className = cls;
    if (txt !== undefined) e.textContent = txt; return e; }
  function show(tok){
    var r = +tok.dataset.run, s = +tok.dataset.step, row = +tok.dataset.row, run = data.runs[r];
    var step = run.steps[s], entry = null;
    for (var i = 0; i < step.rows.length; i++) if (step.rows[i].row === row) entry = step.rows[i];
    root.querySelectorAll('.tok.sel').forEach(function(e){ e.classList.remove('sel'); });
    tok.classList.add('sel');
    panel.textContent = '';
    panel.appendChild(el('div', 'stagehead',
      (data.runs.length > 1 ? data.labels[r] + ': ' : '') + 'step ' + s + ', row ' + row + ': chose "' +
      shown(text(run, entry.chosen)) + '" (id ' + entry.chosen + ')   entropy ' + num(entry.entropy, 3) +
      ' nats   random ' + num(entry.random, 4)));
    var stages = el('div', 'stages');
    (entry.stages || []).forEach(function(st){
      var box = el('div');
      box.appendChild(el('div', 'stagehead', st.name + ': alive ' + st.alive + ', chosen rank ' +
        (st.chosen_rank === null ? 'filtered' : st.chosen_rank) + ', p=' + num(st.chosen_prob, 4)));
      var table = el('table', 'cand');
      var head = el('tr');
      ['#', 'token', 'id', 'score', 'prob'].forEach(function(h){ head.appendChild(el('th', '', h)); });
      table.appendChild(head);
      (st.top || []).forEach(function(c, k){
        var tr = el('tr', c.token === entry.chosen ? 'chosen' : '');
        tr.appendChild(el('td', '', String(k))); tr.appendChild(el('td', 't', shown(text(run, c.token))));
        tr.appendChild(el('td', '', String(c.token)));
        tr.appendChild(el('td', '', c.logit === null ? '-inf' : num(c.logit, 3)));
        tr.appendChild(el('td', '', num(c.prob, 4)));
        table.appendChild(tr);
      });
      box.appendChild(table); stages.appendChild(box);
    });
    panel.appendChild(stages);
  }
  root.addEventListener('click', function(e){ var t = e.target.closest('.tok'); if (t) show(t); });
  root.addEventListener('keydown', function(e){
    var t = e.target.closest && e.target.closest('.tok');
    if (t && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); show(t); }
  });
})();
"""


def _check(trace: dict, name: str) -> None:
    if not isinstance(trace, dict) or "steps" not in trace:
        raise TypeError(f"{name} must be a trace as a dict (trace.to_dict(), format {FORMAT!r}), "
                        f"got {type(trace).__name__}.")
    if trace.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{name} has format {trace.get('format')!r}; this report reads {FORMAT!r}.")


def _text(trace: dict, token: int) -> Optional[str]:
    return (trace.get("token_text") or {}).get(str(token))


def visible(text: str) -> str:
    """``text`` with its invisible characters made visible: other control characters as their Unicode
    pictures (U+2400...), an empty text as the empty-set sign; newlines, tabs and spaces stay."""
    if text == "":
        return "\u2205"
    return "".join(chr(0x2400 + ord(c)) if (ord(c) < 0x20 and c not in "\n\t") else
                   ("\u2421" if c == "\x7f" else c) for c in text)


def _token_html(trace: dict, token: int) -> str:
    """The escaped, visible text of ``token`` (``[id]`` when the trace has no text for it)."""
    text = _text(trace, token)
    return html.escape(f"[{token}]" if text is None else visible(text), quote=True)


def colour(prob: Optional[float]) -> str:
    """The background of a token whose probability is ``prob``: red (0) through yellow to green (1); grey if unknown."""
    if prob is None or not math.isfinite(prob):
        return "#e3e5ea"
    return f"hsl({120 * min(max(prob, 0.0), 1.0):.0f},75%,80%)"


def _final_prob(entry: dict) -> Optional[float]:
    """The chosen token's probability under the last stage (the distribution the token was drawn from)."""
    for stage in reversed(entry.get("stages") or []):
        if stage.get("chosen_prob") is not None:
            return stage["chosen_prob"]
    return None


def row_tokens(trace: dict) -> dict[int, list[tuple[int, dict]]]:
    """``{row: [(step, row entry), ...]}`` in step order: each row's chosen tokens."""
    rows: dict[int, list[tuple[int, dict]]] = {}
    for step in trace["steps"]:
        for entry in step.get("rows") or []:
            rows.setdefault(entry["row"], []).append((step["step"], entry))
    return rows


def first_divergence(trace: dict, other: dict) -> dict[int, int]:
    """``{row: step}``: the first step at which each row's chosen token differs between the two traces
    (rows that never differ, over the steps both have, are left out)."""
    ours, theirs = row_tokens(trace), row_tokens(other)
    found = {}
    for row in sorted(set(ours) & set(theirs)):
        for (step, a), (_, b) in zip(ours[row], theirs[row]):
            if a["chosen"] != b["chosen"]:
                found[row] = step
                break
        else:
            if len(ours[row]) != len(theirs[row]):
                found[row] = min(len(ours[row]), len(theirs[row]))
    return found


def _divergence_steps(trace: dict, other: dict, divergence: Any) -> dict[int, int]:
    """The divergence to mark: given (``{"row": r, "step": s}``, or a list of them), else computed."""
    if divergence is None:
        return first_divergence(trace, other)
    marks = divergence if isinstance(divergence, (list, tuple)) else [divergence]
    found = {}
    for mark in marks:
        get = mark.get if isinstance(mark, dict) else lambda name, default=None, m=mark: getattr(m, name, default)
        if get("step") is not None:
            found[int(get("row", 0) or 0)] = int(get("step"))
    return found


def _rows_html(trace: dict, run: int, marks: Optional[dict[int, int]] = None) -> str:
    parts = []
    prompt_text = trace.get("prompt_text") or []
    prompts = trace.get("prompt") or []
    for row, tokens in sorted(row_tokens(trace).items()):
        if row < len(prompt_text) and prompt_text[row] is not None:
            prompt = html.escape(prompt_text[row])
        elif row < len(prompts):
            prompt = "".join(_token_html(trace, t) for t in prompts[row])
        else:
            prompt = ""
        spans = []
        mark = (marks or {}).get(row)
        for step, entry in tokens:
            prob = _final_prob(entry)
            classes = "tok" + (" div" if mark == step else "") + (" after" if mark is not None and step > mark else "")
            title = f"step {step} \u00b7 id {entry['chosen']} \u00b7 p={'?' if prob is None else f'{prob:.4f}'}"
            spans.append(f'<span class="{classes}" tabindex="0" role="button" data-run="{run}" data-step="{step}" '
                         f'data-row="{row}" style="background:{colour(prob)}" title="{html.escape(title)}">'
                         f'{_token_html(trace, entry["chosen"])}</span>')
        label = f"row {row}" + (f" \u00b7 diverges at step {mark}" if mark is not None else "")
        parts.append(f'<div class="rowlabel">{html.escape(label)}</div>'
                     f'<div class="text"><span class="prompt">{prompt}</span>{"".join(spans)}</div>')
    return "".join(parts)


def _beam_tree_html(trace: dict) -> str:
    """The live beams of every step as nested lists: each beam under the beam (previous step) it extends."""
    levels = [step.get("beams") or [] for step in trace["steps"] if step.get("beams")]
    if not levels:
        return ""

    def node(level: int, index: int) -> str:
        beam = levels[level][index]
        label = (f'<span class="chip">{_token_html(trace, beam["token"])}</span> score {beam["score"]:.3f}'
                 if beam.get("score") is not None else _token_html(trace, beam["token"]))
        if beam.get("finished"):
            label += ' <span class="fin">finished</span>'
        children = ([i for i, b in enumerate(levels[level + 1]) if b.get("parent") == index]
                    if level + 1 < len(levels) else [])
        inner = "".join(node(level + 1, i) for i in children)
        return f"<li>step {level}: {label}" + (f'<ul class="tree">{inner}</ul>' if inner else "") + "</li>"

    roots: dict[int, list[int]] = {}
    for index, beam in enumerate(levels[0]):
        roots.setdefault(int(beam.get("parent") or 0), []).append(index)
    trees = "".join(f'<div class="rowlabel">from prompt row {parent}</div><ul class="tree">'
                    + "".join(node(0, i) for i in children) + "</ul>" for parent, children in sorted(roots.items()))
    return f'<h3>Beam tree</h3><div class="hint">each live beam under the beam it extends</div>{trees}'


def _drafts_html(trace: dict) -> str:
    rounds = [(step["step"], d) for step in trace["steps"] for d in (step.get("draft") or [])]
    if not rounds:
        return ""
    lines = []
    total = sum(len(d["drafted"]) for _, d in rounds)
    accepted = sum(d["accepted"] for _, d in rounds)
    for step, d in rounds:
        chips = [f'<span class="chip {"acc" if k < d["accepted"] else "rej"}">{_token_html(trace, t)}</span>'
                 for k, t in enumerate(d["drafted"])]
        if d.get("correction") is not None:
            chips.append(f'<span class="chip cor">{_token_html(trace, d["correction"])}</span>')
        lines.append(f'<tr><td>{step}</td><td>{d["row"]}</td><td>{d["accepted"]}/{len(d["drafted"])}</td>'
                     f'<td>{"".join(chips)}</td></tr>')
    rate = f"{accepted / total:.0%}" if total else "n/a"
    return (f'<h3>Speculation</h3><div class="hint">{accepted} of {total} drafted tokens accepted ({rate}); '
            '<span class="chip acc">accepted</span><span class="chip rej">rejected</span>'
            '<span class="chip cor">correction</span></div><table class="drafts"><tr><th>step</th><th>row</th>'
            f'<th>accepted</th><th>draft</th></tr>{"".join(lines)}</table>')


def _summary(trace: dict) -> str:
    entries = [e for step in trace["steps"] for e in (step.get("rows") or [])]
    entropies = [e["entropy"] for e in entries if e.get("entropy") is not None]
    mean = f", mean entropy {sum(entropies) / len(entropies):.3f} nats" if entropies else ""
    rows = len({e["row"] for e in entries})
    return (f'strategy <b>{html.escape(str(trace.get("strategy")))}</b>, {len(trace["steps"])} steps, '
            f'{rows} row(s){mean}')


def _json_for_script(value: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` (``</script>`` in a token cannot end it).

    Non-finite floats become ``null`` (JSON has no ``-inf``), as in the trace's own JSON form.
    """
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    text = json.dumps(clean(value), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_report(trace: dict, other: Optional[dict] = None, divergence: Any = None,
                  title: Optional[str] = None, labels: tuple[str, str] = ("run A", "run B")) -> str:
    """The report of ``trace`` (and, for a diff, ``other``) as one self-contained ``<div>``.

    Args:
        trace: a trace in its JSON form (``trace.to_dict()``, format ``decoding.trace/1``).
        other: a second trace: the two runs are shown side by side, the divergence marked.
        divergence: where they diverge: ``{"row": r, "step": s}`` (other keys are ignored), an object with
            ``row`` and ``step`` attributes, or a list of them; computed from the chosen tokens (first
            differing step per row) when None.
        title: the heading (default "decoding trace" or "decoding diff").
        labels: the names of the two runs of a diff.

    Returns:
        HTML: a ``<div>`` holding its ``<style>``, the report and a small ``<script>`` (the click handler).

    Raises:
        TypeError / ValueError: ``trace`` or ``other`` is not a trace dict of this format.
    """
    _check(trace, "trace")
    runs = [trace]
    if other is not None:
        _check(other, "other")
        runs.append(other)
    root_id = f"decoding-report-{next(_counter)}"
    heading = title or ("decoding diff" if other is not None else "decoding trace")
    stages = "".join(f'<span class="chip">{html.escape(str(s))}</span>' for s in trace.get("stages") or [])
    legend = ('<div class="legend">probability of the chosen token: 0 <span class="scale"></span> 1 '
              '<span class="chip" style="background:#e3e5ea">unknown</span> <span class="hint">click a token for '
              'its candidates at every stage</span></div>')
    if other is None:
        body = _rows_html(trace, 0) + _beam_tree_html(trace) + _drafts_html(trace)
        meta = _summary(trace)
    else:
        marks = _divergence_steps(trace, other, divergence)
        where = ", ".join(f"row {r} at step {s}" for r, s in sorted(marks.items())) or "nowhere (identical tokens)"
        meta = f"diverges: {html.escape(where)}"
        columns = [f'<div><h3>{html.escape(label)}</h3><div class="meta">{_summary(run)}</div>'
                   f'{_rows_html(run, index, marks)}{_beam_tree_html(run)}{_drafts_html(run)}</div>'
                   for index, (label, run) in enumerate(zip(labels, runs))]
        body = f'<div class="side">{"".join(columns)}</div>'
    data = {"runs": [{"steps": r["steps"], "token_text": r.get("token_text") or {}} for r in runs],
            "labels": list(labels)}
    return (f'<div class="dr" id="{root_id}"><style>{_STYLE}</style>'
            f'<h2>{html.escape(heading)}</h2><div class="meta">{meta}</div>'
            f'<div class="meta">pipeline: {stages}</div>{legend}{body}'
            '<div class="panel"><span class="hint">Click a token to see its candidate table.</span></div>'
            f'<script type="application/json" class="dr-data">{_json_for_script(data)}</script>'
            f'<script>{_SCRIPT.replace("ROOT_ID", json.dumps(root_id))}</script></div>')


def write_report(path: Union[str, Path], trace: dict, other: Optional[dict] = None, divergence: Any = None,
                 title: Optional[str] = None) -> Path:
    """Write :func:`render_report` as a complete HTML document to ``path`` (UTF-8); returns the path.

    The file needs nothing else: no network, no external asset. Open it in any browser.
    """
    heading = title or ("decoding diff" if other is not None else "decoding trace")
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(heading)}</title>'
            f'</head><body>{render_report(trace, other, divergence, title)}</body></html>\n')
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
