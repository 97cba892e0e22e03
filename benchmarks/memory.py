"""Memory and time of a huge max_new_tokens that an early eos makes moot, decoding.generate against model.generate.

Each strategy runs with max_new_tokens=1,000,000 (``--new-tokens``) and eos ids that end the run
within a few steps, so the work is a few steps whatever the limit says; what differs is what each
implementation allocates for the limit. Reports, per strategy, how far each run raised the process's
peak resident memory above what was resident when it started (Linux: the peak is reset before each
run through /proc/self/clear_refs), the best time of ``--repeats`` runs, and whether both returned
the same tokens.

    python benchmarks/memory.py                    # tiny Llama
    python benchmarks/memory.py --model PATH       # any local Hugging Face folder
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from common import best_time, parser, setup  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402

STRATEGIES = {
    "greedy": {},
    "sampling": dict(do_sample=True, top_k=20),
    "beam search": dict(num_beams=3),
    "beam sampling": dict(num_beams=3, do_sample=True),
    "prompt lookup": dict(prompt_lookup_num_tokens=3),
}
SEED = 0


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


def peak_growth_mib(fn: Callable[[], Any]) -> Optional[float]:
    """Run ``fn`` once; how far it raised the peak resident memory above the memory resident before, in MiB."""
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
    for strategy, knobs in STRATEGIES.items():
        if "prompt_lookup_num_tokens" in knobs and args.batch > 1:
            print(f"{strategy:<16}  skipped: the reference's speculation takes one row")
            continue
        kwargs = dict(knobs, eos_token_id=early_eos(model, ids, strategy), pad_token_id=0)
        short = generate("ours", model, ids, max_new_tokens=20, return_dict_in_generate=True, output_scores=True,
                         **kwargs)
        if len(short.scores) >= 20:
            print(f"{strategy:<16}  skipped: these eos ids do not end the run early")
            continue
        outputs, mib, seconds = {}, {}, {}
        for implementation in ("reference", "ours"):
            run = (lambda: outputs.__setitem__(implementation, generate(
                implementation, model, ids, max_new_tokens=args.new_tokens, **kwargs)))
            mib[implementation] = peak_growth_mib(run)
            seconds[implementation] = best_time(run, args.repeats)
        new_tokens = outputs["ours"].shape[1] - ids.shape[1]
        same = torch.equal(outputs["reference"], outputs["ours"])
        print(f"{strategy:<16}{new_tokens:>11}{cell(mib['reference'], 15, 1)}{cell(mib['ours'], 10, 1)}"
              f"{cell(seconds['reference'], 13, 3)}{cell(seconds['ours'], 9, 3)}{str(same):>13}")


if __name__ == "__main__":
    main()
