"""The benchmark suite: every part of benchmarks/ in one run, and one report, benchmarks/results/results.md.

    python -m benchmarks                  # the full run (under 15 minutes on 2 cores)
    python -m benchmarks --quick          # a smoke run of every part (seconds each; tests/test_benchmarks.py)
    python -m benchmarks --only scaling   # one part (repeatable); writes results-scaling.md, not results.md
    python -m benchmarks --out DIR        # the report and the plots in DIR instead of benchmarks/results/
                                          # (or $DECODING_BENCHMARK_RESULTS, which the parts run alone honour too)
    python -m benchmarks --readme         # no run: README.md's figures block rewritten from results.md

A part is a module of benchmarks/ with a function ``section(quick: bool) -> common.Section``. The parts
run in the order of :data:`SECTIONS` (a listed module that is missing, or has no ``section``, is
noted and skipped), then any other module of benchmarks/ that defines ``section``, alphabetically.
Each runs in this process, one after the other; torch's thread count is restored after each (a part
sets its own: 1 thread on the small model, 2 on the built-in one). A part that raises is reported
with its traceback, the others still run, and the exit status is 1.

The report: a header describing the machine (CPU model, cores, torch threads, memory bandwidth,
versions, date, load average before and after: the figures are only comparable on the same, idle,
machine), each part's markdown and plots, its wall time, and a summary of every part's headline
figures (``Section.figures``). ``--readme`` copies the machine lines and the figures chosen by
:data:`README_FIGURES` from results.md into README.md, between its ``benchmarks:start`` and
``benchmarks:end`` markers (so a rerun updates the README in one command).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import import_module
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)          # the parts import their neighbours as top-level modules (`from common import`)

import torch  # noqa: E402

import common  # noqa: E402

#: The parts, in the order they run and appear in the report.
SECTIONS = ["eager", "compiled", "precision", "speculative", "scaling", "memory"]
#: The figures README.md quotes: (part, a piece of the figure's name; "" takes all of the part's figures).
README_FIGURES = [("eager", "ours/reference"), ("compiled", ""), ("precision", "speed-up, ours"),
                  ("precision", "tokens equal"), ("speculative", "speed-up"), ("scaling", "geometric mean"),
                  ("scaling", "worst"), ("memory", "")]
README = os.path.join(os.path.dirname(HERE), "README.md")
START, END = "<!-- benchmarks:start", "<!-- benchmarks:end -->"


def discover() -> list[str]:
    """The modules of benchmarks/ whose source defines ``section(...)``, not in :data:`SECTIONS`, sorted."""
    found = []
    for name in sorted(os.listdir(HERE)):
        stem = name[:-3]
        if name.endswith(".py") and not name.startswith("_") and stem not in SECTIONS:
            with open(os.path.join(HERE, name)) as source:
                if "\ndef section(" in source.read():
                    found.append(stem)
    return found


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    """The repository's commit (with ``+`` when the tree has changes), or ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+" if dirty else "")) or "unknown"


def machine(quick: bool) -> list[str]:
    """The header's lines about the machine and the software (the load average is added at the end)."""
    import transformers

    rate = common.bandwidth(megabytes=64 if quick else 512, repeats=2 if quick else 5)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- machine: {cpu_model()}, {cores} cores usable ({os.cpu_count()} CPUs), "
        f"memory bandwidth {rate / 1e9:.1f} GB/s (reading a {64 if quick else 512} MB tensor: common.bandwidth)",
        f"- torch threads: {torch.get_num_threads()} by default (each part sets its own: see its text)",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; decoding at commit {commit()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{'quick (smoke) run: the figures mean nothing' if quick else 'full run'}",
    ]


def run_section(name: str, quick: bool) -> tuple[Optional[common.Section], str]:
    """Import and run one part; ``(section, note)``: the section is None (with a note) when it could not run."""
    try:
        module = import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None, f"{name}: no benchmarks/{name}.py"
        raise
    if not hasattr(module, "section"):
        return None, f"{name}: benchmarks/{name}.py has no section()"
    threads = torch.get_num_threads()
    try:
        return module.section(quick), ""
    finally:
        torch.set_num_threads(threads)


def summary(done: list[tuple[str, common.Section, float]]) -> str:
    """A table of every part's headline figures and wall time."""
    lines = ["| part | figure | value |", "|---|---|---|"]
    for name, section, _ in done:
        for figure, value in section.figures.items():
            lines.append(f"| {name} | {figure} | {value:.4g} |")
    lines += ["", "| part | wall time s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, _, seconds in done]
    return "\n".join(lines)


def read_report(path: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """results.md's header lines (``- machine: ...``) and its summary's ``(part, figure, value)`` rows."""
    with open(path) as report:
        text = report.read()
    header = [line for line in text.split("\n## ", 1)[0].splitlines() if line.startswith("- ")]
    summary = text.rsplit("## Summary", 1)[-1].split("\n\n")[1] if "## Summary" in text else ""
    rows = [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in summary.splitlines()[2:]]
    return header, [row for row in rows if len(row) == 3]


def readme_block(path: str, readme: str) -> str:
    """The README's figures block: the machine they were taken on, then the figures of :data:`README_FIGURES`."""
    header, rows = read_report(path)
    chosen = [row for part, piece in README_FIGURES for row in rows if row[0] == part and piece in row[1]]
    link = os.path.relpath(path, os.path.dirname(os.path.abspath(readme)))
    lines = [f"Taken from [{link}]({link}):", "", *header, "",
             "| part | figure | value |", "|---|---|---|", *(f"| {' | '.join(row)} |" for row in chosen)]
    return "\n".join(lines)


def update_readme(report: str, readme: str) -> None:
    """Rewrite the lines between ``readme``'s markers with :func:`readme_block` of ``report``.

    Raises:
        ValueError: ``readme`` lacks the ``<!-- benchmarks:start ... -->`` / ``<!-- benchmarks:end -->`` pair.
    """
    with open(readme) as file:
        text = file.read()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no '{START} ... -->' and '{END}' lines around its benchmark figures: add "
                         "them (in the Performance section) and run --readme again.")
    begin = text.index("\n", text.index(START)) + 1
    with open(readme, "w") as file:
        file.write(text[:begin] + readme_block(report, readme) + "\n" + text[text.index(END):])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: every part in seconds, figures meaningless")
    p.add_argument("--only", action="append", metavar="NAME", help="run this part only (repeatable)")
    p.add_argument("--out", default=common.RESULTS, help="folder of the report and plots (default: %(default)s)")
    p.add_argument("--readme", nargs="?", const=README, metavar="PATH",
                   help="run nothing: rewrite the figures block of README.md (or PATH) from the folder's results.md")
    args = p.parse_args(argv)
    common.RESULTS = os.path.abspath(args.out)
    if args.readme:
        update_readme(os.path.join(common.RESULTS, "results.md"), args.readme)
        print(f"{args.readme}: figures block rewritten from {os.path.join(common.RESULTS, 'results.md')}")
        return 0
    names = args.only or SECTIONS + discover()
    report = os.path.join(common.RESULTS, "results.md" if not args.only else f"results-{'-'.join(names)}.md")

    start, load_before = time.perf_counter(), load()
    header = machine(args.quick)
    print("\n".join(header), flush=True)
    done, notes, failed = [], [], []
    for name in names:
        print(f"\n## {name}", flush=True)
        began = time.perf_counter()
        try:
            section, note = run_section(name, args.quick)
        except Exception:  # noqa: BLE001 -- one broken part must not hide the others' figures
            section, note = common.Section(f"{name}: failed", "```\n" + traceback.format_exc() + "```"), ""
            failed.append(name)
        seconds = time.perf_counter() - began
        if section is None:
            notes.append(note)
            print(f"skipped: {note}", flush=True)
            continue
        done.append((name, section, seconds))
        print(f"{section.markdown}\n\n({name}: {seconds:.0f} s)", flush=True)
    total = time.perf_counter() - start

    parts = [f"# Benchmarks{' (quick run)' if args.quick else ''}", "", *header,
             f"- load average (1, 5, 15 min): {load_before} before, {load()} after; wall time {total:.0f} s", ""]
    if notes:
        parts += ["Parts not run: " + "; ".join(notes) + ".", ""]
    for name, section, seconds in done:
        parts += [f"## {section.title}", "", section.markdown.strip(), ""]
        for path in section.files:
            relative = os.path.relpath(path, common.RESULTS)
            parts += [f"![{os.path.basename(path)}]({relative})" if path.endswith(".png") else f"File: {relative}", ""]
        parts += [f"({name}: {seconds:.0f} s)", ""]
    parts += ["## Summary", "", summary(done), ""]
    os.makedirs(common.RESULTS, exist_ok=True)
    with open(report, "w") as out:
        out.write("\n".join(parts))
    print(f"\n## Summary\n\n{summary(done)}\n\nwrote {report}; total wall time {total:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + ("" if args.only or args.quick else "\nquote it in README.md: python -m benchmarks --readme"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
