"""The eager path against the reference's eager ``model.generate``: time per token and the loop's own share.

For each workload (greedy, sampling, beam search; batch 1 and 8) both implementations run the same
call, alternating, and the best of several repeats of each is kept (machine noise hits both alike).
Printed per workload: ms per token of each, ours / reference time (< 1: ours is faster), the share
of a call spent outside ``model.forward`` for each (the loop's own time: processors, choosing,
bookkeeping, cache reordering; ``model.forward`` is wrapped with a timer for that), and whether
the tokens are the same. CPU time of the process is kept beside wall time: on a shared machine
wall time is inflated by other work, the ratio is the figure to read.

Workloads: the small Llama-shaped model of the speed issue (hidden 256, 4 layers, vocab 4096,
random weights, 1 torch thread), a 16-token prompt, no eos: greedy and sampling (top-k 50,
top-p 0.9) at batch 1 and 8, beam search and beam sampling with 4 beams at batch 1; then the
built-in model (SmolLM2-135M, 2 torch threads) at batch 1: greedy, sampling, beam search.

    python benchmarks/eager.py                       # the full run (about 3 minutes)
    python benchmarks/eager.py --quick               # a seconds-long smoke run (the tests' tiny model)
    python benchmarks/eager.py --no-builtin          # the small model only
    python benchmarks/eager.py --model PATH --threads 2 --new-tokens 32   # any local Hugging Face folder
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from common import Section, small_llama  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402

SAMPLING = dict(do_sample=True, top_k=50, top_p=0.9)
BEAMS = dict(num_beams=4)


@dataclass
class Workload:
    """One call measured both ways: ``kwargs`` of ``generate`` beyond the prompt and the length."""

    label: str
    batch: int
    kwargs: dict


@dataclass
class Row:
    """The measured figures of one workload (seconds are per call, the best of the repeats)."""

    label: str
    tokens: int
    reference: float
    ours: float
    reference_cpu: float
    ours_cpu: float
    reference_outside: float
    ours_outside: float
    same: bool

    @property
    def ratio(self) -> float:
        """Ours / reference wall time (< 1: ours is faster)."""
        return self.ours / self.reference

    @property
    def cpu_ratio(self) -> float:
        """Ours / reference CPU time of the process."""
        return self.ours_cpu / self.reference_cpu


class ForwardTimer:
    """Wraps ``model.forward`` (as an instance attribute, so ``model(...)`` goes through it) and adds up
    the wall time spent inside it; ``remove()`` puts back what was there before."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.seconds = model, 0.0
        self.own = model.__dict__.get("forward")          # an instance's own forward (a hooked model), or None
        original = model.forward

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        model.forward = timed

    def remove(self) -> None:
        if self.own is not None:
            self.model.forward = self.own
        else:
            del self.model.forward


def measure(model: torch.nn.Module, ids: torch.LongTensor, workload: Workload, new_tokens: int,
            repeats: int) -> Row:
    """Run ``workload`` with both implementations, alternating; keep the best wall and CPU time of each,
    and the share outside ``model.forward`` of each one's fastest run."""
    call = dict(max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, **workload.kwargs)
    runs: dict[str, Callable[[], Any]] = {
        "reference": lambda: model.generate(ids, **call),
        "ours": lambda: decoding.generate(model, ids, **call),
    }
    outputs = {}
    for name, run in runs.items():                       # warm-up, and the tokens of each
        torch.manual_seed(0)
        outputs[name] = run()
    wall = {name: float("inf") for name in runs}
    cpu, outside = dict(wall), dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            torch.manual_seed(0)
            timer = ForwardTimer(model)
            try:
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
            finally:
                timer.remove()
            cpu[name] = min(cpu[name], cpu_seconds)
            if seconds < wall[name]:
                wall[name], outside[name] = seconds, (seconds - timer.seconds) / seconds
    return Row(workload.label, new_tokens * ids.shape[0], wall["reference"], wall["ours"], cpu["reference"],
               cpu["ours"], outside["reference"], outside["ours"], torch.equal(outputs["reference"], outputs["ours"]))


def prompt(batch: int, vocab: int) -> torch.LongTensor:
    """``[batch, 16]`` random ids (3 and up: no special token), the same every run."""
    return torch.randint(3, vocab, (batch, 16), generator=torch.Generator().manual_seed(0))


def small_workloads() -> list[Workload]:
    """The small model's workloads (1 thread): greedy and sampling at batch 1 and 8, beams at batch 1."""
    return [Workload("greedy, batch 1", 1, {}), Workload("sampling, batch 1", 1, SAMPLING),
            Workload("greedy, batch 8", 8, {}), Workload("sampling, batch 8", 8, SAMPLING),
            Workload("beam search 4 beams, batch 1", 1, BEAMS),
            Workload("beam sampling 4 beams, batch 1", 1, dict(BEAMS, do_sample=True))]


def builtin_workloads(name: str = "built-in") -> list[Workload]:
    """A real model's workloads (batch 1): greedy, sampling, beam search; ``name`` starts each label."""
    return [Workload(f"{name}: greedy, batch 1", 1, {}), Workload(f"{name}: sampling, batch 1", 1, SAMPLING),
            Workload(f"{name}: beam search 4 beams, batch 1", 1, BEAMS)]


def run_workloads(model: torch.nn.Module, workloads: list[Workload], new_tokens: int, repeats: int,
                  threads: int) -> list[Row]:
    """Measure each workload on ``model`` with ``threads`` torch threads, printing each row as it comes."""
    torch.set_num_threads(threads)
    vocab = model.get_input_embeddings().num_embeddings
    rows = []
    for workload in workloads:
        rows.append(measure(model, prompt(workload.batch, vocab), workload, new_tokens, repeats))
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = ("| workload | reference ms/token | ours ms/token | ours ÷ reference (wall) | ours ÷ reference (CPU) "
          "| outside forward, reference | outside forward, ours | same tokens |\n|---|---|---|---|---|---|---|---|")


def format_row(row: Row) -> str:
    """One markdown row of :data:`HEADER`."""
    per = 1000 / row.tokens
    return (f"| {row.label} | {row.reference * per:.3f} | {row.ours * per:.3f} | {row.ratio:.3f} | "
            f"{row.cpu_ratio:.3f} | {row.reference_outside:.1%} | {row.ours_outside:.1%} | {row.same} |")


def slug(label: str) -> str:
    """A workload's label as a figure name: "beam search 4 beams, batch 1" -> "beam_search_4_beams_batch_1"."""
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


def section(quick: bool, builtin: bool = True) -> Section:
    """The suite's part: every workload on the small model (1 thread) and, unless ``quick``, the built-in
    model (2 threads). ``quick``: the tests' tiny model, 4 tokens, one repeat."""
    warnings.filterwarnings("ignore")
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    if quick:
        from tests.models import tiny_model
        rows = run_workloads(tiny_model("llama"), small_workloads(), new_tokens=4, repeats=1, threads=1)
    else:
        rows = run_workloads(small_llama(), small_workloads(), new_tokens=64, repeats=5, threads=1)
        if builtin:
            from transformers import AutoModelForCausalLM
            from decoding.builtin import builtin_model_path
            model = AutoModelForCausalLM.from_pretrained(builtin_model_path()).eval()
            rows += run_workloads(model, builtin_workloads(), new_tokens=32, repeats=2, threads=2)
    torch.set_num_threads(threads)
    load = " / ".join(" ".join(f"{x:.2f}" for x in loads) for loads in (load_before, os.getloadavg()))
    model = "the tests' tiny Llama, 4 new tokens (a smoke run)" if quick else (
        "small Llama (hidden 256, 4 layers, vocab 4096, random weights), 1 torch thread, 64 new tokens, best of 5; "
        "built-in model (SmolLM2-135M, float32), 2 torch threads, 32 new tokens, best of 2")
    markdown = (
        f"Ours (`decoding.generate`) against the reference's eager `model.generate`, the same call side by "
        f"side, alternating: {model}; 16-token prompt, no eos. ms per token is wall time of a whole call / "
        f"tokens generated (prompts x new tokens: for beams, per step of the search); the ratios are ours / "
        f"reference (< 1: ours is faster), in wall time and in CPU time of the process. \"Outside forward\" is "
        f"the share of a call not spent in `model.forward` (the loop's own time). Load average before / after: "
        f"{load}.\n\n" + HEADER + "\n" + "\n".join(format_row(row) for row in rows) + "\n")
    figures = {}
    for row in rows:
        figures[f"eager {slug(row.label)} ours/reference"] = round(row.ratio, 3)
        figures[f"eager {slug(row.label)} outside forward ours"] = round(row.ours_outside, 4)
        figures[f"eager {slug(row.label)} outside forward reference"] = round(row.reference_outside, 4)
    return Section(title="Eager path against the reference", markdown=markdown, figures=figures)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tests' tiny model, 4 tokens, one repeat")
    p.add_argument("--no-builtin", action="store_true", help="skip the built-in model")
    p.add_argument("--model", help="a local Hugging Face folder: its greedy, sampling and beam rows only")
    p.add_argument("--new-tokens", type=int, default=32, help="with --model")
    p.add_argument("--repeats", type=int, default=3, help="with --model")
    p.add_argument("--threads", type=int, default=1, help="torch threads, with --model")
    args = p.parse_args()
    print(HEADER)
    if args.model:
        from transformers import AutoModelForCausalLM
        warnings.filterwarnings("ignore")
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        run_workloads(model, builtin_workloads(os.path.basename(args.model.rstrip("/"))), args.new_tokens,
                      args.repeats, args.threads)
        return
    result = section(args.quick, builtin=not args.no_builtin)
    print()
    print(result.markdown)
    for name, value in result.figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
