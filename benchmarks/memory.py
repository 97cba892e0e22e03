"""Memory of decoding.generate against model.generate: a huge max_new_tokens that an early eos makes moot,
and (the suite's part) peak memory of long generations and no growth over repeated calls.

Each strategy runs with max_new_tokens=1,000,000 (``--new-tokens``) and eos ids that end the run
within a few steps, so the work is a few steps whatever the limit says; what differs is what each
implementation allocates for the limit. Reports, per strategy, how far each run raised the process's
peak resident memory above what was resident when it started (Linux: the peak is reset before each
run through /proc/self/clear_refs, after freed memory is given back to the system), the best time of
``--repeats`` runs, and whether both returned the same tokens.

:func:`section` (``python -m benchmarks``) adds, on the small Llama-shaped model: the peak of a long
generation (greedy, sampling, beam search; ours at most the reference's), the table above, and the
resident memory after the first and the last of 200 repeated calls (benchmarks/long_use.py's loop).

    python benchmarks/memory.py                    # tiny Llama
    python benchmarks/memory.py --model PATH       # any local Hugging Face folder
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from typing import Any, Callable, Optional

import torch

from common import Section, best_time, parser, setup, small_llama  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402
from long_use import many_calls  # noqa: E402  (benchmarks/long_use.py)

STRATEGIES = {
    "greedy": {},
    "sampling": dict(do_sample=True, top_k=20),
    "beam search": dict(num_beams=3),
    "beam sampling": dict(num_beams=3, do_sample=True),
    "prompt lookup": dict(prompt_lookup_num_tokens=3),
}
SEED = 0
#: The long generations of the suite's part: every run makes all its tokens (no eos).
LONG = {
    "greedy": {},
    "sampling": dict(do_sample=True, top_k=20),
    "beam search": dict(num_beams=4),
}


def resident_kib(field: str) -> Optional[int]:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process in KiB, or None without Linux's /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def give_back() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc's ``malloc_trim``), so that what an
    earlier run freed but kept does not hide the next run's peak."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):    # not glibc: the peak may then be under-reported, never over
            pass


def peak_growth_mib(fn: Callable[[], Any]) -> Optional[float]:
    """Run ``fn`` once; how far it raised the peak resident memory above the memory resident before, in MiB."""
    give_back()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")                   # Linux >= 4.0: reset the peak to what is resident now
    except OSError:
        fn()
        return None
    before = resident_kib("VmRSS")
    fn()
    peak = resident_kib("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def generate(implementation: str, model: Any, ids: torch.LongTensor, **kwargs: Any) -> Any:
    torch.manual_seed(SEED)
    if implementation == "ours":
        return decoding.generate(model, ids, **kwargs)
    return model.generate(ids, **kwargs)


def early_eos(model: Any, ids: torch.LongTensor, strategy: str) -> list[int]:
    """Eos ids that end the run within a few steps, read off a 4-token run of the same strategy and seed.
    One row ends at its first eos: the tokens each row emits at steps 1 and 3. A beam search ends once
    every prompt has num_beams finished hypotheses: the 3 likeliest tokens of every beam at steps 1 to 3."""
    knobs = STRATEGIES[strategy]
    plain = {k: v for k, v in knobs.items() if k in ("do_sample", "top_k", "num_beams")}
    out = generate("reference", model, ids, max_new_tokens=4, eos_token_id=None, pad_token_id=0,
                   return_dict_in_generate=True, output_logits=True, **plain)
    if "num_beams" in knobs:
        return torch.cat([logits.topk(3, dim=-1).indices.flatten() for logits in out.logits[1:]]).unique().tolist()
    return out.sequences[:, ids.shape[1]:][:, [1, 3]].unique().tolist()


def cell(value: Optional[float], width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def early_eos_rows(model: Any, ids: torch.LongTensor, new_tokens: int, repeats: int) -> list:
    """Per strategy of :data:`STRATEGIES`, ``(strategy, new tokens made, peak MiB by implementation, best seconds
    by implementation, same tokens)`` of a run with ``max_new_tokens=new_tokens`` and an early eos, or a line
    saying why the strategy was skipped."""
    rows: list = []
    for strategy, knobs in STRATEGIES.items():
        if "prompt_lookup_num_tokens" in knobs and ids.shape[0] > 1:
            rows.append(f"{strategy:<16}  skipped: the reference's speculation takes one row")
            continue
        kwargs = dict(knobs, eos_token_id=early_eos(model, ids, strategy), pad_token_id=0)
        short = generate("ours", model, ids, max_new_tokens=20, return_dict_in_generate=True, output_scores=True,
                         **kwargs)
        if len(short.scores) >= 20:
            rows.append(f"{strategy:<16}  skipped: these eos ids do not end the run early")
            continue
        outputs, mib, seconds = {}, {}, {}
        for implementation in ("reference", "ours"):
            run = (lambda: outputs.__setitem__(implementation, generate(
                implementation, model, ids, max_new_tokens=new_tokens, **kwargs)))
            start = time.perf_counter()
            mib[implementation] = peak_growth_mib(run)
            seconds[implementation] = time.perf_counter() - start
            if repeats > 1:
                seconds[implementation] = min(seconds[implementation], best_time(run, repeats - 1))
        made = outputs["ours"].shape[1] - ids.shape[1]
        rows.append((strategy, made, mib, seconds, torch.equal(outputs["reference"], outputs["ours"])))
    return rows


def tensor_peak_bytes(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once; the most bytes of tensors alive at one time while it ran (torch.profiler's memory
    events: each allocation and free of a CPU tensor, added up in order). Unlike the resident-memory
    peak, it does not depend on the allocator or on what ran before: the same call gives the same figure."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    alive = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):     # stable: same-time events in order
        alive += event.nbytes()                                          # negative for a free
        peak = max(peak, alive)
    return peak


def long_peaks(model: Any, ids: torch.LongTensor, new_tokens: int, rounds: int) -> list:
    """Per strategy of :data:`LONG`: ``(strategy, peak MiB by implementation, tensor peak MiB by
    implementation, same tokens)``. Each round runs the reference then ours, the next one ours then the
    reference (what a first run leaves resident must not favour the second); the least peak of each over
    the rounds. The tensor peak (:func:`tensor_peak_bytes`) comes from one more run of each."""
    rows = []
    for strategy, knobs in LONG.items():
        kwargs = dict(knobs, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
        outputs, peaks = {}, {"reference": [], "ours": []}
        for round_ in range(rounds):
            for implementation in (("reference", "ours") if round_ % 2 == 0 else ("ours", "reference")):
                peaks[implementation].append(peak_growth_mib(lambda: outputs.__setitem__(
                    implementation, generate(implementation, model, ids, **kwargs))))
        mib = {name: None if None in values else min(values) for name, values in peaks.items()}
        tensors = {name: tensor_peak_bytes(lambda: generate(name, model, ids, **kwargs)) / 2 ** 20
                   for name in ("reference", "ours")}
        rows.append((strategy, mib, tensors, torch.equal(outputs["reference"], outputs["ours"])))
    return rows


def section(quick: bool) -> Section:
    """The suite's part: the small model, 1 thread; a long generation (500 new tokens, batch 2; quick: the
    tests' tiny model, 20 tokens), the huge ``max_new_tokens`` table (100,000; quick: 1,000), and 200 repeated
    calls (quick: 8)."""
    torch.set_num_threads(1)
    if quick:
        from tests.models import tiny_model
        model, name = tiny_model("llama"), "the tests' tiny Llama (a smoke run)"
        long_tokens, huge_limit, calls = 20, 1000, 8
    else:
        model, name = small_llama(), "the small Llama (hidden 256, 4 layers, vocab 4096)"
        long_tokens, huge_limit, calls = 500, 10**5, 200
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    rounds = 2
    lines = [f"Model: {name}; torch threads 1; prompts of 16 tokens. Peak MiB: how far one run raised the "
             "process's peak resident memory (Linux VmHWM, reset before each run after freed memory is handed "
             f"back to the system), the least of {rounds} runs each, alternating which goes first. The same call's "
             "peak varies from run to run (by up to a third for beam search, allocator noise): read a ratio near "
             "1 as level. Tensor peak MiB: the most bytes of tensors alive at one time in one more run "
             "(torch.profiler's memory events), the same in every run of the same call.", "",
             f"Long generation, batch 2, {long_tokens} new tokens, no eos:", "",
             "| strategy | reference peak MiB | ours peak MiB | ours / reference | reference tensor peak MiB | "
             "ours tensor peak MiB | ours / reference (tensors) | same tokens |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    worst = worst_tensors = 0.0
    for strategy, mib, tensors, same in long_peaks(model, ids, long_tokens, rounds=rounds):
        ratio = mib["ours"] / mib["reference"] if mib["ours"] is not None and mib["reference"] else None
        tensor_ratio = tensors["ours"] / tensors["reference"]
        worst, worst_tensors = max(worst, ratio or 0.0), max(worst_tensors, tensor_ratio)
        lines.append(f"| {strategy} | {cell(mib['reference'], 0, 1)} | {cell(mib['ours'], 0, 1)} | "
                     f"{cell(ratio, 0, 2)} | {tensors['reference']:.3f} | {tensors['ours']:.3f} | "
                     f"{tensor_ratio:.4f} | {same} |")
    print(f"  long generations: {time.perf_counter() - start:.0f} s", flush=True)
    lines += ["", f"A huge limit (max_new_tokens={huge_limit:,}) with an eos that ends the run within a few steps, "
              "batch 1 (buffers must grow with the generation, not be sized to the limit):", "",
              "| strategy | new tokens | reference peak MiB | ours peak MiB | reference s | ours s | same tokens |",
              "|---|---:|---:|---:|---:|---:|---|"]
    huge = 0.0
    for row in early_eos_rows(model, ids[:1], huge_limit, repeats=1):
        if isinstance(row, str):
            lines.append(f"| {row.split('  ')[0]} | {row.split(': ', 1)[1]} | | | | | |")
            continue
        strategy, made, mib, seconds, same = row
        huge = max(huge, mib["ours"] or 0.0)
        lines.append(f"| {strategy} | {made} | {cell(mib['reference'], 0, 1)} | {cell(mib['ours'], 0, 1)} | "
                     f"{seconds['reference']:.3f} | {seconds['ours']:.3f} | {same} |")
    print(f"  huge limit: {time.perf_counter() - start:.0f} s", flush=True)
    figures = many_calls(model, ids[:1, :8], calls, new_tokens=4)
    mib = 2 ** 20
    growth = (figures["rss_last"] - figures["rss_first"]) / mib
    lines += ["", f"{calls} repeated calls of 4 new tokens (greedy, sampling, beam search, prompt lookup in turn; "
              "benchmarks/long_use.py): resident memory after the first call "
              f"{figures['rss_first'] / mib:.1f} MiB, after the last {figures['rss_last'] / mib:.1f} MiB, growth "
              f"{growth:+.1f} MiB. Each strategy's output in the last round equals its first: "
              + ", ".join(f"{strategy} {same}" for strategy, same in figures["same"].items()) + "."]
    return Section("Memory", "\n".join(lines), {
        "long generation peak, ours/reference, worst strategy": worst,
        "long generation tensor peak, ours/reference, worst strategy": worst_tensors,
        f"max_new_tokens={huge_limit:,} with early eos, ours peak MiB, worst": huge,
        f"RSS growth over {calls} calls MiB": growth,
    })


def main() -> None:
    p = parser(__doc__, new_tokens=10**6)
    p.set_defaults(repeats=1)
    args = p.parse_args()
    model, name, ids = setup(args)

    print(f"model: {name}; batch {args.batch}; max_new_tokens {args.new_tokens:,} with an eos after a few tokens; "
          f"torch threads {torch.get_num_threads()}")
    print("peak MiB: how far one run raised the process's peak resident memory (n/a without Linux's /proc)")
    print(f"{'strategy':<16}{'new tokens':>11}{'reference MiB':>15}{'ours MiB':>10}{'reference s':>13}{'ours s':>9}"
          f"{'same tokens':>13}")
    for row in early_eos_rows(model, ids, args.new_tokens, args.repeats):
        if isinstance(row, str):
            print(row)
            continue
        strategy, new_tokens, mib, seconds, same = row
        print(f"{strategy:<16}{new_tokens:>11}{cell(mib['reference'], 15, 1)}{cell(mib['ours'], 10, 1)}"
              f"{cell(seconds['reference'], 13, 3)}{cell(seconds['ours'], 9, 3)}{str(same):>13}")


if __name__ == "__main__":
    main()
