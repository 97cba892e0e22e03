"""The compiled path side by side: ours eager, ours compiled, the reference's eager and compiled generate.

For greedy and sampling at the given batch, each repeat runs the four one after the other (alternating,
so machine noise hits all alike) and the best time of each is kept. Printed: ms per token, the ratios
(> 1: ours compiled is faster), the time of the first compiled call (compilation included), the graphs
dynamo compiled (warm-up, then during the timed runs and for new prompt lengths: 0 means no
recompilation), the share of compiled tokens equal to the eager ones, the machine's memory bandwidth
(a large tensor copy), the fraction of it one decode step reaches (weight bytes / step time /
bandwidth), and the load average (the machine is shared: CPU time per token, the process's own,
is printed beside wall time, since a loaded machine inflates the latter).

Ours compiled is ``compile=True`` with its defaults (inductor with ``freezing`` on the CPU); the
reference's compiled path is ``cache_implementation="static"`` with its default ``CompileConfig``
(``_compile_all_devices=True``: the reference compiles on the CPU only when told), on the same
static cache length (the bucket ``compile=True`` picks).

    python benchmarks/compiled.py                          # small Llama (hidden 256, 4 layers, vocab 4096)
    python benchmarks/compiled.py --model "$(python -c 'import decoding.builtin as b; print(b.builtin_model_path())')"
    python benchmarks/compiled.py --tiny --new-tokens 4 --repeats 1    # smoke run
"""

from __future__ import annotations

import os
import time

import torch

from common import bandwidth, parser, setup, small_llama, weight_bytes  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402
from decoding.compiled import bucket_length, compile_count  # noqa: E402


def main() -> None:
    import transformers

    p = parser(__doc__, new_tokens=64)
    p.add_argument("--tiny", action="store_true", help="the tests' tiny Llama (hidden 64): a smoke run")
    args = p.parse_args()
    model, name, ids = setup(args)
    if not args.model and not args.tiny:
        model, name = small_llama(), "small Llama (hidden 256, 4 layers, vocab 4096)"
        ids = torch.randint(3, 4096, (args.batch, 16), generator=torch.Generator().manual_seed(0))
    config = transformers.CompileConfig()
    config._compile_all_devices = True       # the reference compiles on the CPU only when told
    cache_len = bucket_length(ids.shape[1] + args.new_tokens - 1)
    common = dict(max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=0)
    runs = {
        "ours eager": lambda kw: decoding.generate(model, ids, **common, **kw),
        "ours compiled": lambda kw: decoding.generate(model, ids, compile=True, **common, **kw),
        "reference eager": lambda kw: model.generate(ids, **common, **kw),
        "reference compiled": lambda kw: model.generate(ids, cache_implementation="static", compile_config=config,
                                                        max_cache_len=cache_len, **common, **kw),
    }
    rate = bandwidth()
    print(f"model: {name}; batch {args.batch}; {args.new_tokens} new tokens; torch threads "
          f"{torch.get_num_threads()}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"memory bandwidth (tensor copy) {rate / 1e9:.1f} GB/s")
    per = 1000 / args.new_tokens
    for label, kwargs in [("greedy", {}), ("sample T=0.7 top-p=0.9", dict(do_sample=True, temperature=0.7, top_p=0.9))]:
        outputs, first = {}, {}
        for run_name, run in runs.items():                 # warm-up: the first call compiles
            graphs = compile_count()
            torch.manual_seed(0)
            start = time.perf_counter()
            outputs[run_name] = run(kwargs)
            first[run_name] = (time.perf_counter() - start, compile_count() - graphs)
        graphs = compile_count()
        best = {run_name: float("inf") for run_name in runs}
        cpu = dict(best)
        for _ in range(args.repeats):                       # alternating, best of each
            for run_name, run in runs.items():
                torch.manual_seed(0)
                start, start_cpu = time.perf_counter(), time.process_time()
                run(kwargs)
                best[run_name] = min(best[run_name], time.perf_counter() - start)
                cpu[run_name] = min(cpu[run_name], time.process_time() - start_cpu)
        timed_recompiles = compile_count() - graphs
        graphs = compile_count()
        for length in (9, 23):                              # new prompt lengths, same bucket
            other = torch.randint(3, 100, (args.batch, length), generator=torch.Generator().manual_seed(length))
            torch.manual_seed(0)
            decoding.generate(model, other, compile=True, **dict(common, max_new_tokens=max(1, cache_len - length - 8)), **kwargs)
        length_recompiles = compile_count() - graphs

        reference_eager, ours = outputs["reference eager"], outputs["ours compiled"]
        new = ids.shape[1]
        agreement = float((reference_eager[:, new:] == ours[:, new:]).float().mean()) * 100
        print(f"\n{label}")
        print(f"  {'':<20}{'ms/token':>10}{'CPU ms/token':>14}{'first call s':>14}{'graphs compiled':>17}")
        for run_name in runs:
            print(f"  {run_name:<20}{best[run_name] * per:>10.3f}{cpu[run_name] * per:>14.3f}"
                  f"{first[run_name][0]:>14.2f}{first[run_name][1]:>17}")
        print(f"  ours eager, same tokens as reference eager: "
              f"{torch.equal(outputs['ours eager'], reference_eager)}")
        print(f"  ours compiled, tokens identical to reference eager: {agreement:.1f}%; to reference compiled: "
              f"{float((outputs['reference compiled'][:, new:] == ours[:, new:]).float().mean()) * 100:.1f}%")
        print(f"  speedup of ours compiled: {best['reference eager'] / best['ours compiled']:.2f}x reference eager, "
              f"{best['reference compiled'] / best['ours compiled']:.2f}x reference compiled, "
              f"{best['ours eager'] / best['ours compiled']:.2f}x ours eager")
        print(f"  the same in CPU time (this process's, not the load's): "
              f"{cpu['reference eager'] / cpu['ours compiled']:.2f}x reference eager, "
              f"{cpu['reference compiled'] / cpu['ours compiled']:.2f}x reference compiled")
        print(f"  ours eager: {best['reference eager'] / best['ours eager']:.2f}x reference eager")
        print(f"  graphs compiled during the timed runs: {timed_recompiles}; for prompts of 9 and 23 tokens: "
              f"{length_recompiles}")
        step = best["ours compiled"] / args.new_tokens
        print(f"  bandwidth limit: weights {weight_bytes(model) / 1e6:.1f} MB / {step * 1000:.3f} ms per step = "
              f"{weight_bytes(model) / step / 1e9:.1f} GB/s, {100 * weight_bytes(model) / step / rate:.0f}% of "
              f"{rate / 1e9:.1f} GB/s")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
