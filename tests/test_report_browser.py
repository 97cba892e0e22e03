"""The report in a real browser: headless Chromium opens the file, the tokens are rendered, a click on a
token shows its candidate table, and a screenshot is taken.

Chromium comes from the system (Debian: ``apt-get install chromium``; ``.ci/browser`` installs it);
the test is skipped only when no Chromium can be found or started. Set ``DECODING_CHROMIUM`` to use
another binary. Playwright (the ``test`` extra) drives it; its own browser download is never used.
"""

import os
import shutil

import pytest

from decoding.insight.report import write_report
from tests.trace_samples import sample_trace


def chromium_path():
    for candidate in (os.environ.get("DECODING_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (install it with .ci/browser, or set DECODING_CHROMIUM to a binary)")
    from playwright.sync_api import Error, sync_playwright   # a declared test dependency: not skipped

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, headless=True, timeout=20_000)
        except Error as error:
            pytest.skip(f"Chromium at {path} did not start: {str(error).splitlines()[0]}")
        yield browser
        browser.close()


def test_the_report_renders_tokens_and_a_click_shows_the_candidate_table(browser, tmp_path):
    trace = sample_trace(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=1)
    trace["token_text"][str(trace["steps"][0]["rows"][0]["chosen"])] = '</script><b>&"x\n'   # must show as text
    path = write_report(tmp_path / "report.html", trace, title="sampled run")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())

    tokens = page.locator(".tok")
    rows = len(trace["prompt"])
    assert tokens.count() == rows * len(trace["steps"])
    first = tokens.first
    assert first.inner_text() == '</script><b>&"x\n'
    assert page.locator(".cand").count() == 0
    first.click()
    tables = page.locator(".panel table.cand")
    assert tables.count() == len(trace["stages"])            # one candidate table per stage
    head = page.locator(".panel .stagehead").first.inner_text()
    assert head.startswith("step 0, row 0: chose ") and "random 0." in head
    chosen_row = tables.last.locator("tr.chosen")
    assert chosen_row.count() == 1 and chosen_row.locator("td").nth(2).inner_text() == \
        str(trace["steps"][0]["rows"][0]["chosen"])
    assert "TopKLogitsWarper: alive 20" in page.locator(".panel").inner_text()
    page.locator(".tok").nth(len(trace["steps"]) + 3).click()                 # row 1, step 3
    assert page.locator(".panel .stagehead").first.inner_text().startswith("step 3, row 1: ")
    page.locator(".tok").first.click()
    shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    assert not errors
    if os.environ.get("DECODING_SCREENSHOT_DIR"):                            # keep it to look at
        shutil.copy(tmp_path / "report.png", os.environ["DECODING_SCREENSHOT_DIR"])
    page.close()


def test_a_diff_marks_the_divergence_in_both_columns(browser, tmp_path):
    greedy, sampled = sample_trace(), sample_trace(do_sample=True, temperature=1.5, seed=2)
    path = write_report(tmp_path / "diff.html", greedy, sampled)
    page = browser.new_page()
    page.goto(path.as_uri())
    assert page.locator(".side > div").count() == 2
    marked = page.locator(".tok.div")
    assert marked.count() >= 2 and marked.count() % 2 == 0           # each diverging row, in both runs
    marked.last.click()
    assert page.locator(".panel .stagehead").first.inner_text().startswith("run B: step ")
    page.locator(".tok").nth(1).focus()                                  # the keyboard works too
    page.keyboard.press("Enter")
    assert page.locator(".panel .stagehead").first.inner_text().startswith("run A: step 1, row 0: ")
    page.close()


def test_a_real_trace_renders_and_a_click_shows_every_stage(browser, tmp_path):
    import torch

    import decoding
    from tests.models import PAD, tiny_model
    from tests.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    ids = torch.tensor([tok("The cat sat")["input_ids"]])
    out = decoding.generate(tiny_model("llama"), ids, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD,
                            do_sample=True, temperature=0.8, top_k=20, seed=2, return_dict_in_generate=True,
                            trace=decoding.insight.Tracer(top=5, tokenizer=tok))
    path = out.trace.write_report(tmp_path / "real.html", title="a real trace")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    tokens = page.locator(".tok")
    assert tokens.count() == 6
    tokens.nth(2).click()
    assert page.locator(".panel table.cand").count() == 3           # raw, temperature, top_k
    head = page.locator(".panel .stagehead").first.inner_text()
    chosen = out.trace.steps[2]["rows"][0]["chosen"]
    assert head.startswith("step 2, row 0: chose ") and f"(id {chosen})" in head and "random " in head
    assert "top_k: alive 20" in page.locator(".panel").inner_text()
    page.screenshot(path=str(tmp_path / "real.png"))
    assert not errors
