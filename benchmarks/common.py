"""What every benchmark shares: the command line, the model, and timing (best of several repeats)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn``, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def alternating(runs: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, tuple[float, float]]:
    """Run each of ``runs`` in turn, ``repeats`` rounds; the best ``(wall s, CPU s)`` of each.

    Alternating spreads the machine's noise over all runs alike, so their ratios hold on a loaded machine;
    the CPU time is this process's (all its threads: with 2 threads it may exceed the wall time).
    """
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def parser(doc: str, new_tokens: int) -> argparse.ArgumentParser:
    """The flags every side-by-side benchmark takes; add your own, then call :func:`setup`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a local Hugging Face folder (default: a tiny random Llama)")
    p.add_argument("--new-tokens", type=int, default=new_tokens)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def setup(args: argparse.Namespace) -> tuple[Any, str, torch.LongTensor]:
    """Apply ``--threads``, load the model; returns ``(model, description, prompt ids [batch, 16])``."""
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from transformers import AutoModelForCausalLM
        model, name = AutoModelForCausalLM.from_pretrained(args.model).eval(), args.model
    else:
        from tests.models import tiny_model
        model, name = tiny_model("llama"), "tiny random Llama (2 layers, hidden 64, vocab 512)"
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (args.batch, 16), generator=torch.Generator().manual_seed(0))
    return model, name, ids


def small_llama(max_position_embeddings: int = 2048) -> torch.nn.Module:
    """The small Llama-shaped model of the speed issue: hidden 256, 4 layers, vocab 4096, random weights
    (the same weights whatever its context, ``max_position_embeddings``: rotary positions learn nothing)."""
    import transformers
    config = transformers.LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=4, vocab_size=4096,
                                      max_position_embeddings=max_position_embeddings, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


class Clock:
    """A streamer that only notes when each ``put`` came (wall and process CPU time): the prompt, then every
    new token."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def end(self) -> None:
        pass

    def step_seconds(self) -> float:
        """Seconds per decode step: from the first new token to the last (the prefill left out); NaN when
        fewer than two new tokens came."""
        if len(self.times) < 3:
            return float("nan")
        return (self.times[-1] - self.times[1]) / (len(self.times) - 2)


def bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """The machine's memory bandwidth in bytes per second, as a decode step uses it: reading.

    The best of ``repeats`` sums over a tensor of ``megabytes`` (each byte read once; a sum is far from
    compute-bound) and, if faster, of copies of it (2 bytes per byte copied: read + write). A decode
    step only reads its weights: a copy alone understates what it can reach (on this project's 2-core
    EPYC, 25 GB/s copying against 34 GB/s reading with 2 threads), and a step then seemed to pass
    100% of it.
    """
    source = torch.ones(megabytes * 2 ** 20 // 4)
    target = torch.empty_like(source)
    read = copy = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        source.sum()
        read = min(read, time.perf_counter() - start)
        start = time.perf_counter()
        target.copy_(source)
        copy = min(copy, time.perf_counter() - start)
    size = source.numel() * 4
    return max(size / read, 2 * size / copy)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one decode step reads (tied weights counted once)."""
    seen, total = set(), 0
    for tensor in model.parameters():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


# ---- the suite's interface: `python -m benchmarks` calls `section(quick)` of every module in SECTIONS ----

#: The folder of the suite's report (results.md) and of the plots the parts write: benchmarks/results/, or
#: $DECODING_BENCHMARK_RESULTS, or the runner's ``--out`` (tests write to a temporary folder); parts name
#: their files through :func:`results_path`.
RESULTS = os.environ.get("DECODING_BENCHMARK_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                        "results")


def results_path(name: str) -> str:
    """The path of an output file (a plot) named ``name`` in the results folder (created if missing)."""
    os.makedirs(RESULTS, exist_ok=True)
    return os.path.join(RESULTS, name)


@dataclass
class Section:
    """One part of the suite's report (benchmarks/results/results.md).

    ``title``: a heading; ``markdown``: the body (tables, with the units in their headers, and a line
    saying what was measured and how); ``figures``: the headline numbers by name (ratios, fractions,
    seconds), printed at the end of the run and quoted in the README; ``files``: paths this section wrote
    (plots) under benchmarks/results/.
    """

    title: str
    markdown: str
    figures: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
