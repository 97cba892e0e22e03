"""The HTML report of a trace dict, read as text (tests/test_report_browser.py opens it in Chromium)."""

import json
import math
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoding.insight.report import colour, first_divergence, render_report, visible, write_report
from tests.trace_samples import beam_trace, sample_trace, speculative_trace


@pytest.fixture(scope="module")
def greedy():
    return sample_trace()


@pytest.fixture(scope="module")
def sampled():
    return sample_trace(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=1)


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" class="dr-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def test_one_coloured_clickable_token_per_row_and_step(sampled):
    page = render_report(sampled)
    spans = re.findall(r'<span class="tok[^"]*" tabindex="0" role="button" data-run="0" data-step="(\d+)" '
                       r'data-row="(\d+)" style="background:([^"]+)"', page)
    expected = [(str(s["step"]), str(r["row"])) for s in sampled["steps"] for r in s["rows"]]
    assert sorted((step, row) for step, row, _ in spans) == sorted(expected)
    probs = {(str(s["step"]), str(r["row"])): r["stages"][-1]["chosen_prob"]
             for s in sampled["steps"] for r in s["rows"]}
    assert all(background == colour(probs[(step, row)]) for step, row, background in spans)
    assert "probability of the chosen token" in page                        # the legend
    for stage in sampled["stages"]:
        assert f'<span class="chip">{stage}</span>' in page                   # the pipeline


def test_the_data_for_the_candidate_tables_is_embedded_whole(sampled):
    data = embedded_data(render_report(sampled))
    assert data["runs"][0]["steps"] == json.loads(json.dumps(sampled["steps"]))
    stage = data["runs"][0]["steps"][0]["rows"][0]["stages"][2]              # TopKLogitsWarper
    assert stage["name"] == "TopKLogitsWarper" and stage["alive"] == 20
    assert [c["prob"] for c in stage["top"]] == sorted((c["prob"] for c in stage["top"]), reverse=True)


def test_token_texts_are_escaped_everywhere(greedy):
    trace = json.loads(json.dumps(greedy))
    nasty = '</script><img src=x onerror=alert(1)>&amp;"\'\n \x01'
    chosen = trace["steps"][0]["rows"][0]["chosen"]
    trace["token_text"][str(chosen)] = nasty
    trace["prompt_text"][0] = "<b>bold?</b>"
    page = render_report(trace)
    assert page.count("</script>") == 2                                         # only the report's own two
    assert "<img" not in page and "<b>bold" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;&quot;&#x27;\n \u2401" in page
    assert "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert embedded_data(page)["runs"][0]["token_text"][str(chosen)] == nasty    # the script shows it as text


class TokenTexts(HTMLParser):
    """The text inside each ``<span class="tok ...">`` of a page, as a browser would read it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts, self.inside = [], False

    def handle_starttag(self, tag, attrs):
        if tag == "span" and (dict(attrs).get("class") or "").startswith("tok"):
            self.texts.append("")
            self.inside = True

    def handle_endtag(self, tag):
        self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.texts[-1] += data


@given(texts=st.lists(st.text(max_size=12), min_size=2, max_size=2))
def test_any_token_text_reads_back_as_itself(greedy, texts):
    trace = json.loads(json.dumps(greedy))
    chosen = [row["chosen"] for row in trace["steps"][0]["rows"]]
    for token, text in zip(chosen, texts):
        trace["token_text"][str(token)] = text
    if chosen[0] == chosen[1]:
        texts[1] = texts[0]
    page = render_report(trace)
    parser = TokenTexts()
    parser.feed(page)
    steps = len(trace["steps"])
    assert len(parser.texts) == 2 * steps
    assert [parser.texts[0], parser.texts[steps]] == [visible(t) for t in texts]
    assert embedded_data(page)["runs"][0]["token_text"][str(chosen[1])] == texts[1]


def test_minus_inf_scores_become_null_in_the_embedded_data(greedy):
    trace = json.loads(json.dumps(greedy))
    trace["steps"][0]["rows"][0]["stages"][0]["top"][-1]["logit"] = -math.inf
    data = embedded_data(render_report(trace))
    assert data["runs"][0]["steps"][0]["rows"][0]["stages"][0]["top"][-1]["logit"] is None


def test_a_trace_without_texts_shows_ids(greedy):
    trace = dict(greedy, token_text=None, prompt_text=None)
    page = render_report(trace)
    first = greedy["steps"][0]["rows"][0]["chosen"]
    assert f'<span class="prompt">{"".join(f"[{t}]" for t in greedy["prompt"][0])}</span>' in page
    assert f'title="step 0 \u00b7 id {first} \u00b7 p=' in page and f">[{first}]</span>" in page
    assert embedded_data(page)["runs"][0]["token_text"] == {}


def test_visible_shows_invisible_characters():
    assert visible("") == "\u2205" and visible("a\x00b\x1b") == "a\u2400b\u241b" and visible(" \n\t") == " \n\t"


def test_colour_runs_from_red_to_green():
    assert colour(0.0) == "hsl(0,75%,80%)" and colour(1.0) == "hsl(120,75%,80%)" and colour(0.5) == "hsl(60,75%,80%)"
    assert colour(None) == colour(float("nan")) == "#e3e5ea"


def test_the_beam_tree_nests_each_beam_under_its_parent():
    trace = beam_trace()
    page = render_report(trace)
    assert "<h3>Beam tree</h3>" in page
    tree = page[page.index("<h3>Beam tree</h3>"):page.index('<div class="panel">')]
    # every live beam of the last step hangs from a chain of one ancestor per step
    assert tree.count("<li>") >= len(trace["steps"][-1]["beams"])
    assert tree.count('<ul class="tree">') == 1 + sum(
        len({b["parent"] for b in s["beams"]}) for s in trace["steps"][1:])
    assert tree.count("finished</span>") == sum(b["finished"] for s in trace["steps"] for b in s["beams"])


def test_drafts_are_marked_accepted_rejected_and_corrected():
    page = render_report(speculative_trace())
    assert "6 of 9 drafted tokens accepted (67%)" in page
    rows = page[page.index('<table class="drafts">'):]
    assert rows.count('class="chip acc"') == 6 and rows.count('class="chip rej"') == 3
    assert rows.count('class="chip cor"') == 3


def test_a_diff_shows_two_columns_with_the_divergence_marked(greedy, sampled):
    divergence = first_divergence(greedy, sampled)
    assert divergence and all(isinstance(step, int) for step in divergence.values())
    page = render_report(greedy, sampled)
    assert page.count('<div class="side">') == 1 and "run A" in page and "run B" in page
    assert page.count(' div"') + page.count(' div after"') == 2 * len(divergence)
    given = render_report(greedy, sampled, divergence={"row": 1, "step": 5, "reason": "token"})
    assert "diverges: row 1 at step 5" in given and "row 1 \u00b7 diverges at step 5" in given
    assert "nowhere (identical tokens)" in render_report(greedy, greedy)
    mark = type("Divergence", (), {"row": 0, "step": 2})()                       # a diff's result object
    assert "diverges: row 0 at step 2" in render_report(greedy, sampled, divergence=[mark])


def test_first_divergence_of_a_run_with_itself_is_empty_and_a_shorter_run_diverges_where_it_ends(greedy):
    assert first_divergence(greedy, greedy) == {}
    shorter = dict(greedy, steps=greedy["steps"][:3])
    assert first_divergence(greedy, shorter) == {0: 3, 1: 3}


def test_write_report_is_one_self_contained_document(tmp_path, sampled):
    path = write_report(tmp_path / "r.html", sampled, title="a <title>")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;title&gt;</title>" in page
    assert not re.search(r"https?://|src=|href=|@import|url\(", page.replace("src=x", ""))
    assert render_report(sampled).split('id="decoding-report-')[0] == '<div class="dr" '


def test_two_reports_in_one_notebook_get_their_own_ids(greedy):
    first, second = render_report(greedy), render_report(greedy)
    ids = [re.search(r'id="(decoding-report-\d+)"', page).group(1) for page in (first, second)]
    assert ids[0] != ids[1] and json.dumps(ids[1]) in second


def test_not_a_trace_is_a_clear_error(greedy):
    with pytest.raises(TypeError, match="trace.to_dict"):
        render_report([1, 2])
    with pytest.raises(ValueError, match="decoding.trace/1"):
        render_report(dict(greedy, format="decoding.trace/9"))
    with pytest.raises(TypeError, match="other must be"):
        render_report(greedy, "not a trace")
