"""bfloat16 against float32 on the CPU: speed, agreement with the float32 tokens, exactness against the reference.

For the built-in model (SmolLM2-135M-Instruct, 2 torch threads) and the small Llama-shaped model (hidden 256,
4 layers, vocab 4096, random weights, 1 thread), each loaded in float32 and in bfloat16 (``decoding.load(...,
dtype="bfloat16")``; the small model cast with ``.to(torch.bfloat16)``):

- speed: greedy at batch 1, ours and the reference in both dtypes, the four runs alternating, best of the
  repeats; wall and CPU (this process's) ms per token, and the speed-up of bfloat16 over float32;
- agreement: greedy over a left-padded batch of prompts (8 prompts x 32 new tokens in the full run), the
  share of generated tokens of the bfloat16 run equal to the float32 run's, position by position, and the
  rows equal all through;
- exactness: ours against ``model.generate`` on that batch, in each dtype (True/False).

It also reads the CPU's flags (``/proc/cpuinfo``, what ``lscpu`` shows): bfloat16 matrix products are fast
only with AVX512-BF16 or AMX (oneDNN's kernels); without them they are emulated in float32.

    python benchmarks/precision.py            # the full run (estimated 1 minute on an idle 2-core machine)
    python benchmarks/precision.py --quick    # a smoke run (a few tokens, the small model only)
"""

from __future__ import annotations

import argparse
import copy
import os
import warnings
from typing import Any

import torch

from common import Section, alternating, small_llama  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402
from decoding.inputs import left_pad  # noqa: E402

TEXTS = [
    "The history of the lighthouse on the northern cape begins",
    "To make a good loaf of bread, you need",
    "The main causes of the French Revolution were",
    "Photosynthesis is the process by which plants",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Dear Sir or Madam, I am writing to complain about",
    "The three laws of motion, as Newton stated them, are",
    "Once upon a time, in a village at the edge of a great forest,",
]

CPU_FLAGS = {"avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_tile": "AMX tiles"}


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this CPU reports (``/proc/cpuinfo``; all False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {name: name in flags for name in CPU_FLAGS}


def first_difference(a: torch.Tensor, b: torch.Tensor) -> torch.LongTensor:
    """``[rows]``: the first position where ``a`` and ``b`` (``[rows, n]``) differ, ``n`` where they never do."""
    differs = a != b
    return torch.where(differs.any(-1), differs.int().argmax(-1), torch.full_like(differs[:, 0], a.shape[1],
                                                                                  dtype=torch.long))


def compare(models: dict[str, Any], ids: torch.Tensor, mask: torch.Tensor, prompt_ids: torch.Tensor,
            new_tokens: int, timed_tokens: int, repeats: int) -> dict[str, Any]:
    """The measurements of one model: ``models`` maps "float32" and "bfloat16" to the two copies.

    ``ids``/``mask``: ``[rows, len]`` the left-padded batch for agreement and exactness; ``prompt_ids``:
    ``[1, len]`` the one prompt timed.
    """
    batch = dict(attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    ours = {dtype: decoding.generate(model, ids, **batch) for dtype, model in models.items()}
    reference = {dtype: model.generate(ids, **batch) for dtype, model in models.items()}
    new32, new16 = ours["float32"][:, ids.shape[1]:], ours["bfloat16"][:, ids.shape[1]:]
    timing = dict(max_new_tokens=timed_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    runs = {}
    for dtype, model in models.items():
        runs[("ours", dtype)] = lambda model=model: decoding.generate(model, prompt_ids, **timing)
        runs[("reference", dtype)] = lambda model=model: model.generate(prompt_ids, **timing)
    for dtype, model in models.items():   # first-call costs (allocator, kernel selection) out of the timing
        decoding.generate(model, prompt_ids, **dict(timing, max_new_tokens=2))
        model.generate(prompt_ids, **dict(timing, max_new_tokens=2))
    times = alternating(runs, repeats)
    return dict(
        ms={key: (wall * 1000 / timed_tokens, cpu * 1000 / timed_tokens) for key, (wall, cpu) in times.items()},
        agreement=float((new32 == new16).float().mean()),
        prefix=float(first_difference(new32, new16).float().mean() / new32.shape[1]),
        rows_equal=int((new32 == new16).all(-1).sum()), rows=ids.shape[0],
        exact={dtype: torch.equal(ours[dtype], reference[dtype]) for dtype in models})


def builtin_models() -> tuple[dict[str, Any], Any]:
    """The built-in model in float32 and bfloat16 (``decoding.load``'s ``dtype``), and its tokenizer."""
    from decoding.builtin import builtin_model_path

    path = builtin_model_path()
    model32, tokenizer = decoding.load(path, device="cpu")
    model16, _ = decoding.load(path, device="cpu", dtype="bfloat16")
    return {"float32": model32, "bfloat16": model16}, tokenizer


def run(quick: bool) -> tuple[list[tuple[str, int, dict[str, Any]]], dict[str, bool]]:
    """Both models' measurements, ``[(name, threads, compare(...))]``, and the CPU's flags."""
    prompts, new_tokens = (2, 4) if quick else (8, 32)
    timed_tokens, repeats = (4, 1) if quick else (64, 3)
    threads_before = torch.get_num_threads()
    results = []
    try:
        if not quick:                  # the smoke run leaves out the built-in model (two loads of 538 MB)
            torch.set_num_threads(2)
            models, tokenizer = builtin_models()
            ids, mask = left_pad([tokenizer(text)["input_ids"] for text in TEXTS[:prompts]], tokenizer.pad_token_id)
            results.append(("built-in SmolLM2-135M", 2, compare(models, ids, mask, ids[:1, mask[0].argmax():],
                                                                 new_tokens, timed_tokens, repeats)))
            decoding.release(*models.values())

        torch.set_num_threads(1)
        small = small_llama()
        models = {"float32": small, "bfloat16": copy.deepcopy(small).to(torch.bfloat16)}
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(8, 25, (prompts,), generator=g).tolist()
        ids, mask = left_pad([torch.randint(3, 4096, (n,), generator=g).tolist() for n in lengths], 0)
        results.append(("small Llama (random weights)", 1, compare(models, ids, mask, ids[:1, mask[0].argmax():],
                                                                    new_tokens, timed_tokens, repeats)))
    finally:
        torch.set_num_threads(threads_before)
    return results, cpu_flags()


def report(results: list[tuple[str, int, dict[str, Any]]], flags: dict[str, bool], quick: bool) -> Section:
    """The markdown tables and the headline figures of :func:`run`'s measurements."""
    timed_tokens, repeats, (prompts, new_tokens) = (4, 1, (2, 4)) if quick else (64, 3, (8, 32))
    present = ", ".join(f"{label} {('no', 'yes')[flags[name]]}" for name, label in CPU_FLAGS.items())
    lines = [
        f"CPU: {present} "
        f"(torch's CPU capability: {torch.backends.cpu.get_cpu_capability()}); {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"Speed: greedy, batch 1, {timed_tokens} new tokens, the four runs alternating, best of {repeats}; CPU time "
        "is this process's (all its threads).",
        "",
        "| model | threads | dtype | ours ms/token | reference ms/token | ours CPU ms/token | reference CPU ms/token |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, threads, r in results:
        for dtype in ("float32", "bfloat16"):
            ours, ref = r["ms"][("ours", dtype)], r["ms"][("reference", dtype)]
            lines.append(f"| {name} | {threads} | {dtype} | {ours[0]:.2f} | {ref[0]:.2f} | {ours[1]:.2f} | "
                         f"{ref[1]:.2f} |")
    lines += [
        "",
        "bfloat16 against float32: speed-up = float32 time / bfloat16 time (wall; CPU time in brackets); tokens "
        f"equal: greedy, {prompts} left-padded prompts x {new_tokens} new tokens, the share of the bfloat16 run's "
        "tokens equal to the float32 run's at the same position, the mean share of each row before its first "
        "difference, and the rows equal all through; ours == reference: the same batch, token for token, in each "
        "dtype.",
        "",
        "| model | bf16 speed-up, ours | bf16 speed-up, reference | tokens equal to float32 | before the first "
        "difference | rows equal | ours == reference, bfloat16 | ours == reference, float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    figures = {}
    for name, threads, r in results:
        ms = r["ms"]
        speed = {impl: (ms[(impl, "float32")][0] / ms[(impl, "bfloat16")][0],
                        ms[(impl, "float32")][1] / ms[(impl, "bfloat16")][1]) for impl in ("ours", "reference")}
        lines.append(f"| {name} | {speed['ours'][0]:.2f}x ({speed['ours'][1]:.2f}x) | {speed['reference'][0]:.2f}x "
                     f"({speed['reference'][1]:.2f}x) | {100 * r['agreement']:.1f}% | {100 * r['prefix']:.1f}% | "
                     f"{r['rows_equal']} of {r['rows']} | "
                     f"{r['exact']['bfloat16']} | {r['exact']['float32']} |")
        short = name.split()[0]
        figures[f"{short}: bf16 speed-up, ours"] = speed["ours"][0]
        figures[f"{short}: bf16 speed-up, reference"] = speed["reference"][0]
        figures[f"{short}: bf16 tokens equal to fp32"] = r["agreement"]
        figures[f"{short}: bf16 ours == reference"] = float(r["exact"]["bfloat16"])
    return Section(title="bfloat16 on the CPU", markdown="\n".join(lines), figures=figures)


def section(quick: bool) -> Section:
    """The suite's part (``python -m benchmarks``): an estimated minute on an idle 2-core machine (not measured
    idle), seconds with ``quick``."""
    warnings.filterwarnings("ignore")
    results, flags = run(quick)
    return report(results, flags, quick)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 prompts, 4 tokens, one repeat")
    args = p.parse_args()
    result = section(args.quick)
    print(f"## {result.title}\n\n{result.markdown}")


if __name__ == "__main__":
    main()
