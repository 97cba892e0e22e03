"""Scaling: decode tokens per second against batch size and against prompt length, ours and the reference,
eager and compiled.

Two sweeps on the small Llama-shaped model (hidden 256, 4 layers, vocab 4096, random weights, its
context raised to 4096 positions so a 2048-token prompt fits), greedy, 1 torch thread: batch sizes 1,
2, 4, 8, 16 and 32 at a 16-token prompt, and prompts of 16, 64, 256, 1024 and 2048 tokens at batch 1.
At each shape four runs, one after the other in every repeat (alternating: machine noise hits all
alike): ours eager (``decoding.generate``), the reference's eager ``model.generate``, ours compiled
(``compile=True``) and the reference's compiled path (``cache_implementation="static"`` with a
``CompileConfig`` told ``_compile_all_devices``, on the cache length ``compile=True`` picks).

Decode tokens per second: rows x (new tokens - 1) / the time from the first new token to the last,
read off a streamer's clock, so the prefill (timed apart: ms to the first token) does not hide how a
step's cost grows with the batch and the context. Best of ``--repeats``. The first call of each
compiled run compiles a graph for the shape (its time and the graphs dynamo compiled are reported;
the timed runs should compile none). Dynamo's ``recompile_limit`` (8 graphs per code object) is too
low for a sweep of this many shapes: it is raised to 64 here, and the output says so. Same tokens:
ours eager against the reference's eager (True / False); each compiled run's share of tokens equal
to the reference's eager ones (compiled kernels may round differently).

    python benchmarks/scaling.py                       # both sweeps, about 4 minutes on 2 cores
    python benchmarks/scaling.py --quick               # a smoke run (tiny model, batch 1, two prompts)
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from common import Clock, Section, results_path, small_llama  # benchmarks/common.py; it puts the repository on sys.path
from compiled import runs  # noqa: E402  (benchmarks/compiled.py: the four runs, each given its keywords)
from decoding.compiled import compile_count  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32)
PROMPTS = (16, 64, 256, 1024, 2048)
RUNS = ("ours eager", "reference eager", "ours compiled", "reference compiled")
RECOMPILE_LIMIT = 64


@dataclass
class Shape:
    """One shape's figures: per run, decode tokens/s (by wall and by this process's CPU time, which a loaded
    machine inflates less) and ms to the first token (best of the repeats), the
    first call's seconds and graphs compiled, the graphs compiled in the timed runs, and its tokens."""

    batch: int
    prompt: int
    rate: dict[str, float] = field(default_factory=dict)
    cpu_rate: dict[str, float] = field(default_factory=dict)
    first_token_ms: dict[str, float] = field(default_factory=dict)
    first_call: dict[str, tuple[float, int]] = field(default_factory=dict)
    timed_graphs: int = 0
    same_eager: bool = False
    compiled_equal: dict[str, float] = field(default_factory=dict)


def measure(model: Any, batch: int, prompt: int, new_tokens: int, repeats: int) -> Shape:
    """The four runs at one shape: a first call each (compiling), then ``repeats`` alternating timed rounds."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(prompt * 100 + batch))
    shape, calls, outputs = Shape(batch, prompt), runs(model, ids, new_tokens), {}
    for name, call in calls.items():
        graphs, start = compile_count(), time.perf_counter()
        outputs[name] = call(dict(streamer=Clock()))
        shape.first_call[name] = (time.perf_counter() - start, compile_count() - graphs)
    graphs = compile_count()
    for _ in range(repeats):
        for name, call in calls.items():
            clock = Clock()
            call(dict(streamer=clock))
            decode = clock.times[-1] - clock.times[1]
            shape.rate[name] = max(shape.rate.get(name, 0.0), batch * (new_tokens - 1) / decode)
            cpu = max(clock.cpu[-1] - clock.cpu[1], 1e-9)
            shape.cpu_rate[name] = max(shape.cpu_rate.get(name, 0.0), batch * (new_tokens - 1) / cpu)
            shape.first_token_ms[name] = min(shape.first_token_ms.get(name, math.inf),
                                             1000 * (clock.times[1] - clock.times[0]))
    shape.timed_graphs = compile_count() - graphs
    reference = outputs["reference eager"][:, prompt:]
    shape.same_eager = torch.equal(outputs["ours eager"], outputs["reference eager"])
    for name in ("ours compiled", "reference compiled"):
        shape.compiled_equal[name] = 100 * float((outputs[name][:, prompt:] == reference).float().mean())
    return shape


def table(shapes: list[Shape]) -> str:
    """The markdown table of both sweeps."""
    lines = ["| batch | prompt | ours eager tok/s | reference eager tok/s | ours / reference eager | "
             "ours compiled tok/s | reference compiled tok/s | ours / reference compiled | ours compiled / "
             "reference eager | ms to first token, ours / reference eager | first compiled call s, ours / "
             "reference (graphs) | graphs in timed runs | same tokens eager | compiled tokens = eager %, ours / "
             "reference |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in shapes:
        r = s.rate
        oc, rc = s.first_call["ours compiled"], s.first_call["reference compiled"]
        lines.append(
            f"| {s.batch} | {s.prompt} | {r['ours eager']:.0f} | {r['reference eager']:.0f} | "
            f"{r['ours eager'] / r['reference eager']:.2f} | {r['ours compiled']:.0f} | "
            f"{r['reference compiled']:.0f} | {r['ours compiled'] / r['reference compiled']:.2f} | "
            f"{r['ours compiled'] / r['reference eager']:.2f} | {s.first_token_ms['ours eager']:.1f} / "
            f"{s.first_token_ms['reference eager']:.1f} | {oc[0]:.1f} ({oc[1]}) / {rc[0]:.1f} ({rc[1]}) | "
            f"{s.timed_graphs} | {s.same_eager} | {s.compiled_equal['ours compiled']:.0f} / "
            f"{s.compiled_equal['reference compiled']:.0f} |")
    return "\n".join(lines)


def plot(batch_sweep: list[Shape], prompt_sweep: list[Shape], path: str, title: str) -> None:
    """Two panels, tokens per second against batch size and against prompt length, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours eager": "o-", "reference eager": "s--", "ours compiled": "o-", "reference compiled": "s--"}
    for axis, sweep, x_name, label in ((axes[0], batch_sweep, "batch", "batch size (16-token prompt)"),
                                       (axes[1], prompt_sweep, "prompt", "prompt tokens (batch 1)")):
        xs = [getattr(s, x_name) for s in sweep]
        for name in RUNS:
            axis.plot(xs, [s.rate[name] for s in sweep], styles[name], label=name)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel(label)
        axis.set_ylabel("decode tokens / s")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def sweep(quick: bool, new_tokens: int, repeats: int) -> Section:
    """Both sweeps (``quick``: the tests' tiny model, batch 1, prompts of 16 and 32 tokens), as a Section."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    if quick:
        from tests.models import tiny_model
        model, name = tiny_model("llama"), "the tests' tiny Llama (hidden 64, 2 layers, vocab 512): a smoke run"
        batches, prompts = (1,), (16, 32)           # one graph per run; the second prompt reuses its bucket
    else:
        model, name = small_llama(max_position_embeddings=4096), "the small Llama (hidden 256, 4 layers, vocab 4096)"
        batches, prompts = BATCHES, PROMPTS
    limit = torch._dynamo.config.recompile_limit
    with torch._dynamo.config.patch(recompile_limit=max(limit, RECOMPILE_LIMIT)):
        measured = {}
        for batch, prompt in [(b, prompts[0]) for b in batches] + [(1, p) for p in prompts[1:]]:
            measured[batch, prompt] = measure(model, batch, prompt, new_tokens, repeats)
            print(f"  batch {batch}, prompt {prompt}: "
                  + ", ".join(f"{run} {measured[batch, prompt].rate[run]:.0f} tok/s" for run in RUNS), flush=True)
    batch_sweep = [measured[b, prompts[0]] for b in batches]
    prompt_sweep = [measured[1, p] for p in prompts]
    shapes = batch_sweep + prompt_sweep[1:]
    path = results_path("scaling.png")
    plot(batch_sweep, prompt_sweep, path, f"{name.split(':')[0]}, greedy, {new_tokens} new tokens, 1 thread")

    def ratios(ours: str, reference: str, rates: str = "rate") -> list[float]:
        return [getattr(s, rates)[ours] / getattr(s, rates)[reference] for s in shapes]

    eager, compiled = ratios("ours eager", "reference eager"), ratios("ours compiled", "reference compiled")
    over_eager = ratios("ours compiled", "reference eager")
    cpu = [geometric_mean(ratios(*pair, rates="cpu_rate")) for pair in (("ours eager", "reference eager"),
           ("ours compiled", "reference compiled"), ("ours compiled", "reference eager"))]
    agreement = min(s.compiled_equal["ours compiled"] for s in shapes)
    compile_s = sum(s.first_call["ours compiled"][0] for s in shapes)
    reference_compile_s = sum(s.first_call["reference compiled"][0] for s in shapes)
    markdown = "\n".join([
        f"Model: {name}; greedy, {new_tokens} new tokens, torch threads {torch.get_num_threads()}, best of "
        f"{repeats} alternating rounds. Decode tok/s: rows x (new tokens - 1) / time from the first new token "
        "to the last (the prefill is the ms to the first token). Compiled: ours `compile=True`, the reference "
        "`cache_implementation=\"static\"` with `CompileConfig` (`_compile_all_devices`), same cache length. "
        f"Dynamo's `recompile_limit` raised from {limit} to {max(limit, RECOMPILE_LIMIT)} for this sweep (it "
        "compiles one graph per shape and run). Load average at the end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        table(shapes),
        "",
        f"- ours / reference, eager, decode tok/s: geometric mean {geometric_mean(eager):.2f}, "
        f"from {min(eager):.2f} to {max(eager):.2f}",
        f"- ours / reference, compiled: geometric mean {geometric_mean(compiled):.2f}, "
        f"from {min(compiled):.2f} to {max(compiled):.2f}",
        f"- ours compiled / reference eager: geometric mean {geometric_mean(over_eager):.2f}, "
        f"from {min(over_eager):.2f} to {max(over_eager):.2f}",
        f"- the same three in CPU time (this process's, less disturbed by a loaded machine): geometric means "
        f"{cpu[0]:.2f}, {cpu[1]:.2f}, {cpu[2]:.2f}",
        f"- compiled tokens equal to the reference's eager ones: at least {agreement:.0f}% (ours), "
        f"{min(s.compiled_equal['reference compiled'] for s in shapes):.0f}% (reference)",
        f"- first compiled calls (compilation), all shapes: ours {compile_s:.0f} s, reference "
        f"{reference_compile_s:.0f} s",
    ])
    figures = {
        "eager ours/reference tok/s, geometric mean": geometric_mean(eager),
        "eager ours/reference tok/s, worst": min(eager),
        "compiled ours/reference tok/s, geometric mean": geometric_mean(compiled),
        "ours compiled/reference eager tok/s, geometric mean": geometric_mean(over_eager),
        "ours compiled tokens equal to eager %, worst shape": agreement,
        "ours compile s, all shapes": compile_s,
    }
    return Section("Scaling: batch size and prompt length", markdown, figures, [path])


def section(quick: bool) -> Section:
    """The suite's part (`python -m benchmarks`): both sweeps, 64 new tokens, best of 5 (quick: a smoke run)."""
    return sweep(quick, new_tokens=4 if quick else 64, repeats=1 if quick else 5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: the tests' tiny model, batch 1, two prompts")
    p.add_argument("--new-tokens", type=int, help="default: 64 (quick: 4)")
    p.add_argument("--repeats", type=int, help="default: 5 (quick: 1)")
    args = p.parse_args()
    result = sweep(args.quick, args.new_tokens or (4 if args.quick else 64), args.repeats or (1 if args.quick else 5))
    print(f"\n{result.markdown}\n\nplot: {result.files[0]}")


if __name__ == "__main__":
    main()
