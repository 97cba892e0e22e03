"""Every benchmark runs and reports identical tokens (a tiny run; the figures themselves are not tested:
timings belong to benchmarks/, never to tests)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A part of the suite (a script with ``section(quick)``) is run by test_the_suite_writes_every_part through
# section(quick=True); run alone, its main() is checked to parse its flags (--help) unless it has a path
# section() does not cover, which gets its own short run here.
SHORT_RUNS = {
    "eager.py": ["--help"],
    "precision.py": ["--help"],
    "scaling.py": ["--help"],
    "compiled.py": ["--help"],
    "speculative.py": ["--new-tokens", "6", "--repeats", "1", "--threads", "2", "--exit-layer", "28", "--no-tasks"],
    "memory.py": ["--new-tokens", "1000", "--repeats", "1", "--threads", "1"],
    "chat_cache.py": ["--turns", "2", "--new-tokens", "4", "--repeats", "1", "--threads", "1"],
    "long_use.py": ["--calls", "8", "--threads", "1"],
}


def test_every_benchmark_has_a_short_run():
    scripts = [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name not in ("common.py", "__main__.py")]
    assert sorted(scripts) == sorted(SHORT_RUNS)
    for script, flags in SHORT_RUNS.items():       # --help only where the suite's smoke run covers the script
        assert flags != ["--help"] or "\ndef section(" in (ROOT / "benchmarks" / script).read_text(), script


@pytest.mark.parametrize("script", sorted(SHORT_RUNS))
def test_benchmark_runs_with_identical_tokens(script, builtin_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DECODING_BENCHMARK_RESULTS=str(tmp_path))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *SHORT_RUNS[script]], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    if SHORT_RUNS[script] == ["--help"]:
        assert "usage:" in result.stdout
        return
    verdicts = [word for line in result.stdout.splitlines() for word in line.split() if word in ("True", "False")]
    assert verdicts and set(verdicts) == {"True"}, result.stdout  # every row: the same tokens


def verdicts(text: str) -> list[str]:
    """The True / False words of a benchmark's output (each row's "same tokens")."""
    return [word.strip("|*`.,;:()") for line in text.splitlines() for word in line.split()
            if word.strip("|*`.,;:()") in ("True", "False")]


def test_the_suite_writes_every_part(tmp_path, builtin_dir):
    """`python -m benchmarks --quick` runs every part that has section(), into a report naming each one."""
    parts = [p.stem for p in (ROOT / "benchmarks").glob("*.py") if "\ndef section(" in p.read_text()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "results.md").read_text()
    assert "scaling" in parts and "memory" in parts
    for name in parts:
        assert f"| {name} |" in report, (name, report)          # each part's wall time in the summary
    assert "machine:" in report and "load average" in report and "## Summary" in report
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert verdicts(report) and set(verdicts(report)) == {"True"}, report
    assert "total wall time" in result.stdout
    compiled = report[report.index("## The compiled path"):]                # its side-by-side table, four runs
    compiled = compiled[:compiled.index("\n## ")]
    runs = [line.split(" | ")[0][2:] for line in compiled.splitlines() if line.startswith("| ") and "ms" not in line]
    assert runs == ["ours eager", "ours compiled", "reference eager", "reference compiled"], compiled
    for workload in ("greedy", "sampling"):
        for other in ("reference eager", "reference compiled"):
            assert f"| compiled | small {workload}: ours compiled / {other} |" in report, report

    readme = tmp_path / "README.md"                 # --readme: the README's figures block from this report
    readme.write_text((ROOT / "README.md").read_text())
    quoted = subprocess.run([sys.executable, "-m", "benchmarks", "--readme", str(readme), "--out", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert quoted.returncode == 0, quoted.stdout + quoted.stderr
    text, original = readme.read_text(), (ROOT / "README.md").read_text()
    start, end = "<!-- benchmarks:start", "<!-- benchmarks:end -->"
    block = text[text.index(start):text.index(end)]
    assert "machine:" in block and "| scaling | eager ours/reference tok/s, geometric mean |" in block, block
    assert text[:text.index(start)] == original[:original.index(start)]          # the rest of the README untouched
    assert text[text.index(end):] == original[original.index(end):]
