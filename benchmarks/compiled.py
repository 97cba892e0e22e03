"""The compiled path side by side: ours eager, ours compiled, the reference's eager and compiled generate.

For greedy and sampling at the given batch, each repeat runs the four one after the other (alternating,
so machine noise hits all alike) and the best time of each is kept. Printed: ms per token, the ratios
(> 1: ours compiled is faster), the time of the first compiled call (compilation included), the graphs
dynamo compiled (warm-up, then during the timed runs and for new prompt lengths: 0 means no
recompilation), whether inductor's disk cache served the compilation (warm) or not (cold), the share
of compiled tokens equal to the eager ones, the machine's memory bandwidth (reading a large tensor: ``common.bandwidth``), the
fraction of it one decode step reaches (weight bytes / decode step time / bandwidth; the decode step is
timed off a streamer, from the first new token to the last), and the load average
(the machine is shared: CPU time per token, the process's own, is printed beside wall time, since a
loaded machine inflates the latter).

Ours compiled is ``compile=True`` with its defaults (on the CPU inductor with ``freezing`` and, at these
batch sizes, its C++ GEMM template: ``decoding.compiled.TEMPLATE_OPTIONS``); the
reference's compiled path is ``cache_implementation="static"`` with its default ``CompileConfig``
(``_compile_all_devices=True``: the reference compiles on the CPU only when told), on the same
static cache length (the bucket ``compile=True`` picks).

    python benchmarks/compiled.py                          # small Llama (hidden 256, 4 layers, vocab 4096)
    python benchmarks/compiled.py --model "$(python -c 'import decoding.builtin as b; print(b.builtin_model_path())')" --threads 2
    python benchmarks/compiled.py --tiny --new-tokens 4 --repeats 1    # smoke run

``section(quick)`` is this part of ``python -m benchmarks``: the small model (greedy and sampling,
batch 1, 1 thread) and the built-in model (greedy, batch 1, 2 threads), one table each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from common import Clock, Section, bandwidth, parser, setup, small_llama, weight_bytes  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402
from decoding.compiled import bucket_length, compile_count  # noqa: E402

RUNS = ("ours eager", "ours compiled", "reference eager", "reference compiled")
WORKLOADS = {"greedy": {}, "sampling": dict(do_sample=True, temperature=0.7, top_p=0.9)}


@dataclass
class Workload:
    """One workload's measurements, by run name (:data:`RUNS`): best wall and CPU seconds per token (the
    whole call / new tokens) and per decode step (from the first new token to the last, read off a
    streamer), the first call's seconds and the graphs it compiled; then the agreement and
    recompilation counts."""

    wall: dict[str, float] = field(default_factory=dict)
    step: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    graphs: dict[str, int] = field(default_factory=dict)
    disk_cache: dict[str, str] = field(default_factory=dict)
    same_eager: bool = False
    agreement: float = 0.0
    agreement_reference_compiled: float = 0.0
    timed_recompiles: int = 0
    length_recompiles: int = 0
    lengths: tuple[int, ...] = ()


def runs(model: Any, ids: torch.LongTensor, new_tokens: int) -> dict[str, Callable[[dict], torch.Tensor]]:
    """The four implementations, each a function of the workload's keywords."""
    import transformers

    config = transformers.CompileConfig()
    config._compile_all_devices = True       # the reference compiles on the CPU only when told
    cache_len = bucket_length(ids.shape[1] + new_tokens - 1)
    common = dict(max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    return {
        "ours eager": lambda kw: decoding.generate(model, ids, **common, **kw),
        "ours compiled": lambda kw: decoding.generate(model, ids, compile=True, **common, **kw),
        "reference eager": lambda kw: model.generate(ids, **common, **kw),
        "reference compiled": lambda kw: model.generate(ids, cache_implementation="static", compile_config=config,
                                                        max_cache_len=cache_len, **common, **kw),
    }


def _disk_cache_hits() -> tuple[int, int, int]:
    """Inductor's and AOTAutograd's disk caches: (hits, misses, bypasses) so far in this process."""
    from torch._dynamo.utils import counters
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return (inductor["fxgraph_cache_hit"] + aot["autograd_cache_hit"], inductor["fxgraph_cache_miss"],
            inductor["fxgraph_cache_bypass"])


def measure(model: Any, ids: torch.LongTensor, new_tokens: int, repeats: int, kwargs: dict,
            lengths: tuple[int, ...] = (9, 23)) -> Workload:
    """Warm-up (first calls, compilation included), ``repeats`` alternating timed rounds, then prompts of
    ``lengths`` tokens through ours compiled (the same cache bucket: they should compile nothing)."""
    result, outputs = Workload(), {}
    implementations = runs(model, ids, new_tokens)
    for name, run in implementations.items():
        graphs, cache = compile_count(), _disk_cache_hits()
        torch.manual_seed(0)
        start = time.perf_counter()
        outputs[name] = run(kwargs)
        result.first[name] = time.perf_counter() - start
        result.graphs[name] = compile_count() - graphs
        hits, misses, bypasses = (now - then for now, then in zip(_disk_cache_hits(), cache))
        result.disk_cache[name] = ("cold" if misses else "bypassed" if bypasses else "warm" if hits
                                   else "-")
    graphs = compile_count()
    result.wall = {name: float("inf") for name in implementations}
    result.cpu, result.step = dict(result.wall), dict(result.wall)
    for _ in range(repeats):
        for name, run in implementations.items():
            torch.manual_seed(0)
            clock = Clock()
            start, start_cpu = time.perf_counter(), time.process_time()
            run(dict(kwargs, streamer=clock))
            result.wall[name] = min(result.wall[name], (time.perf_counter() - start) / new_tokens)
            result.step[name] = min(result.step[name], clock.step_seconds())
            result.cpu[name] = min(result.cpu[name], (time.process_time() - start_cpu) / new_tokens)
    result.timed_recompiles = compile_count() - graphs
    graphs = compile_count()
    cache_len = bucket_length(ids.shape[1] + new_tokens - 1)
    vocab = model.get_input_embeddings().num_embeddings
    for length in lengths:                             # new prompt lengths, same bucket
        other = torch.randint(3, vocab, (ids.shape[0], length), generator=torch.Generator().manual_seed(length))
        torch.manual_seed(0)
        decoding.generate(model, other, compile=True, max_new_tokens=max(1, cache_len - length - 8), eos_token_id=None,
                          pad_token_id=0, **kwargs)
    result.length_recompiles, result.lengths = compile_count() - graphs, lengths
    new = ids.shape[1]
    ours, reference = outputs["ours compiled"][:, new:], outputs["reference eager"][:, new:]
    result.same_eager = torch.equal(outputs["ours eager"], outputs["reference eager"])
    result.agreement = float((reference == ours).float().mean()) * 100
    result.agreement_reference_compiled = float((outputs["reference compiled"][:, new:] == ours).float().mean()) * 100
    return result


def table(results: dict[str, Workload], weights: int, rate: float) -> str:
    """The side-by-side markdown table: a row per implementation, ms/token per workload, the first
    workload's decode step, the first call, the graphs it compiled (and whether inductor's disk cache was
    warm), and the bandwidth fraction of the first workload's decode step."""
    names = list(results)
    head = ("| | " + " | ".join(f"{n} ms/token (CPU ms)" for n in names)
            + f" | {names[0]} decode step ms | first call s | graphs compiled | bandwidth fraction |")
    lines = [head, "|" + "---|" * (len(names) + 5)]
    first = results[names[0]]
    for run in RUNS:
        times = " | ".join(f"{results[n].wall[run] * 1000:.2f} ({results[n].cpu[run] * 1000:.2f})" for n in names)
        cache = f" ({first.disk_cache[run]} disk cache)" if first.disk_cache[run] != "-" else ""
        fraction = weights / first.step[run] / rate
        lines.append(f"| {run} | {times} | {first.step[run] * 1000:.2f} | {first.first[run]:.1f} | "
                     f"{first.graphs[run]}{cache} | {fraction:.0%} |")
    return "\n".join(lines)


def summary(results: dict[str, Workload]) -> list[str]:
    """The ratios and checks under the table, one line each."""
    lines = []
    for name, r in results.items():
        lines.append(
            f"{name}: ours compiled {r.wall['reference eager'] / r.wall['ours compiled']:.2f}x reference eager "
            f"(CPU time {r.cpu['reference eager'] / r.cpu['ours compiled']:.2f}x), "
            f"{r.wall['reference compiled'] / r.wall['ours compiled']:.2f}x reference compiled "
            f"(CPU {r.cpu['reference compiled'] / r.cpu['ours compiled']:.2f}x), "
            f"{r.wall['ours eager'] / r.wall['ours compiled']:.2f}x ours eager; ours eager "
            f"{r.wall['reference eager'] / r.wall['ours eager']:.2f}x reference eager; same tokens, ours eager and "
            f"reference eager: {r.same_eager} ; compiled tokens identical to reference eager {r.agreement:.1f}%, "
            f"to reference compiled {r.agreement_reference_compiled:.1f}%; graphs compiled during the timed runs: "
            f"{r.timed_recompiles}, for prompts of other lengths ({', '.join(map(str, r.lengths))} tokens): "
            f"{r.length_recompiles}")
    return lines


def run_model(model: Any, ids: torch.LongTensor, new_tokens: int, repeats: int, workloads: tuple[str, ...],
              lengths: tuple[int, ...] = (9, 23)) -> dict[str, Workload]:
    """:func:`measure` for each named workload of :data:`WORKLOADS`."""
    return {name: measure(model, ids, new_tokens, repeats, WORKLOADS[name], lengths) for name in workloads}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def section(quick: bool) -> Section:
    """The compiled path in ``python -m benchmarks``: the small model (greedy and sampling, batch 1, 1
    thread, 64 new tokens, best of 5) and the built-in model (greedy, batch 1, 2 threads, 32 new tokens,
    best of 4; its compilation is most of the section's time); ``quick``: the tests' tiny Llama, 4 tokens, once (a smoke run)."""
    threads = torch.get_num_threads()
    parts, figures = [], {}
    try:
        torch.set_num_threads(1)
        if quick:
            from tests.models import tiny_model
            model, name = tiny_model("llama"), "tiny random Llama (hidden 64)"
            new_tokens, repeats = 4, 1
        else:
            model, name = small_llama(), "small Llama (hidden 256, 4 layers, vocab 4096, 1 thread)"
            new_tokens, repeats = 64, 5
        vocab = model.get_input_embeddings().num_embeddings
        ids = torch.randint(3, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
        rate = bandwidth()
        small = run_model(model, ids, new_tokens, repeats, ("greedy", "sampling"))
        parts += [f"**{name}**, batch 1, {new_tokens} new tokens, best of {repeats}; memory bandwidth (read, "
                  f"1 thread) {rate / 1e9:.1f} GB/s; load average {_load()}", "", table(small, weight_bytes(model), rate),
                  "", *[f"- {line}" for line in summary(small)], ""]
        for workload, r in small.items():
            figures[f"small {workload}: ours compiled / reference eager"] = r.wall["reference eager"] / r.wall["ours compiled"]
            figures[f"small {workload}: ours compiled / reference compiled"] = (
                r.wall["reference compiled"] / r.wall["ours compiled"])
        if not quick:
            from transformers import AutoModelForCausalLM
            from decoding.builtin import builtin_model_path
            torch.set_num_threads(2)
            model = AutoModelForCausalLM.from_pretrained(builtin_model_path()).eval()
            ids = torch.randint(3, 40000, (1, 16), generator=torch.Generator().manual_seed(0))
            rate = bandwidth()
            builtin = run_model(model, ids, 32, 4, ("greedy",), lengths=(23,))    # compilation dominates
            weights = weight_bytes(model)
            parts += [f"**Built-in model** (SmolLM2-135M, float32, {weights / 1e6:.0f} MB of weights, 2 threads), "
                      f"batch 1, 32 new tokens, best of 4; memory bandwidth (read, 2 threads) "
                      f"{rate / 1e9:.1f} GB/s, so a step cannot take less than {weights / rate * 1000:.1f} ms; load "
                      f"average {_load()}", "", table(builtin, weights, rate), "",
                      *[f"- {line}" for line in summary(builtin)], ""]
            figures["built-in greedy: ours compiled bandwidth fraction"] = weights / builtin["greedy"].step["ours compiled"] / rate
            figures["built-in greedy: ours compiled decode step ms"] = builtin["greedy"].step["ours compiled"] * 1000
            figures["built-in greedy: ours compiled / reference eager"] = (
                builtin["greedy"].wall["reference eager"] / builtin["greedy"].wall["ours compiled"])
            figures["built-in greedy: first compiled call s"] = builtin["greedy"].first["ours compiled"]
    finally:
        torch.set_num_threads(threads)
    parts.append("Wall ms/token: a whole call (its eager prefill included) / new tokens, CPU ms/token of this "
                 "process in brackets; decode step: from the first new token to the last, read off a streamer (the "
                 "prefill left out); best of the alternating repeats. Bandwidth fraction: weight bytes / decode step "
                 "/ the read bandwidth. Under load, read the ratios and CPU times, not the wall times.")
    return Section(title="The compiled path (compile=True)", markdown="\n".join(parts), figures=figures)


def main() -> None:
    import transformers

    p = parser(__doc__, new_tokens=64)
    p.add_argument("--tiny", action="store_true", help="the tests' tiny Llama (hidden 64): a smoke run")
    args = p.parse_args()
    model, name, ids = setup(args)
    if not args.model and not args.tiny:
        model, name = small_llama(), "small Llama (hidden 256, 4 layers, vocab 4096)"
        ids = torch.randint(3, 4096, (args.batch, 16), generator=torch.Generator().manual_seed(0))
    rate = bandwidth()
    print(f"model: {name}; batch {args.batch}; {args.new_tokens} new tokens; torch threads "
          f"{torch.get_num_threads()}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"machine: {os.cpu_count()} CPUs, load average {_load()}; memory bandwidth (read) {rate / 1e9:.1f} GB/s")
    results = run_model(model, ids, args.new_tokens, args.repeats, tuple(WORKLOADS))
    print()
    print(table(results, weight_bytes(model), rate))
    print()
    for line in summary(results):
        print(line)
    step = results["greedy"].step["ours compiled"]
    print(f"bandwidth limit (greedy): weights {weight_bytes(model) / 1e6:.1f} MB / {step * 1000:.3f} ms per step = "
          f"{weight_bytes(model) / step / 1e9:.1f} GB/s, {100 * weight_bytes(model) / step / rate:.0f}% of "
          f"{rate / 1e9:.1f} GB/s")
    print(f"\nload average at the end: {_load()}")


if __name__ == "__main__":
    main()
