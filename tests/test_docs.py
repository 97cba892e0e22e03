"""Docs a reader outside this repository can follow: no pointer to files only the development setup has,
and the quirk tag used as the docs say."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [*ROOT.joinpath("decoding").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md",
         *ROOT.joinpath("examples").glob("*.py")]


def test_no_pointer_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}" for path in TEXTS
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\.\./shared|shared/hf_generate|shared/DESIGN|shared/reviews", line)]
    assert not found, found


def test_quirk_tags_are_one_sentence_comments():
    tags = [(path, line) for path in ROOT.joinpath("decoding").rglob("*.py")
            for line in path.read_text().splitlines() if "reference quirk:" in line]
    assert len(tags) >= 10
    for path, line in tags:
        text = line.strip()
        assert text.startswith("# reference quirk: ") and text.endswith("."), (path, line)
