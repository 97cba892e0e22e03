"""Every Python block of docs/research.md runs, in order, in one namespace (the page is a test)."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "research.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_has_recipes():
    assert len(blocks()) >= 4


def test_every_recipe_runs():
    namespace = {"__name__": "research_recipes"}
    for number, code in enumerate(blocks()):
        try:
            exec(compile(code, f"{PAGE.name} block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"docs/research.md block {number} failed: {error!r}\n{code}") from error
