"""Speculative decoding on the built-in model, each method beside the reference's assisted generation.

Task: an input-grounded one (the model is asked to copy a paragraph it was given), where prompt lookup
shines. For each method it reports, for decoding.generate and for model.generate with the same
arguments in the same run: tokens per second, the speed-up over plain greedy (ours), the number of
forward calls into the model, whether the tokens equal plain greedy's, and (ours) the acceptance rate.

Methods:
- plain greedy;
- prompt lookup (``prompt_lookup_num_tokens``);
- early exit (``assistant_early_exit=k``): the model's first k layers draft. SmolLM2 was not trained for
  early exit (LayerSkip), so its early layers guess badly: this row shows the cost of a poor drafter;
- draft model (``assistant_model=``): there is no smaller SmolLM2 sharing its tokenizer here, so the draft
  is a separate model made of the built-in model's first k layers, embedding and head. It drafts what early
  exit drafts, through the draft-model path.

Then prompt lookup on realistic input-grounded tasks (:data:`TASKS`: copying, summarising, rewriting in
the past tense, fixing the grammar of and renaming a variable in a given text), each through the chat
template (``decoding.conversation.chat_prompt``, end-of-turn ids as eos): plain greedy and prompt lookup,
ours and the reference, the four runs alternating. Per task: tokens per second, the speed-up over plain
greedy (the same implementation's), the target's forwards, the acceptance rate (accepted / drafted tokens,
counted from what each forward was fed, the same way for both), and whether the tokens equal plain
greedy's. ``section(quick)`` is this part, for ``python -m benchmarks``.

    python benchmarks/speculative.py [--new-tokens 64] [--repeats 2] [--threads 2] [--exit-layer 15]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import Section, alternating  # noqa: E402  (benchmarks/common.py)
import decoding  # noqa: E402
from decoding.builtin import builtin_model_path  # noqa: E402

PARAGRAPH = (
    "The lighthouse stood on a narrow spit of rock at the mouth of the harbour. Every evening the keeper climbed "
    "the one hundred and twelve steps to the lamp room, trimmed the wick, polished the great lens and wound the "
    "clockwork that turned the light. Ships coming home in the dark looked for its slow white flash, two seconds "
    "on and eight seconds off, and knew that they were safe.")


# Realistic input-grounded tasks: the answer reuses much of the given text (prompt lookup's case).
TASKS = {
    "copy a paragraph": "Copy the following paragraph exactly, word for word:\n\n" + PARAGRAPH,
    "summarise a paragraph": (
        "Summarise the following paragraph in two sentences.\n\nThe town of Millbrook built its first public "
        "library in 1892, with money left by a local mill owner who had taught himself to read as a boy. For decades "
        "the library was a single room above the post office, open three evenings a week, with a few hundred books "
        "chosen by a committee of teachers. In 1958 the town raised the money for a new building by the river, with "
        "a reading room, a children's corner and space for ten thousand books. Today the library lends books, films "
        "and music, runs reading groups for children and adults, and offers free internet access to anyone who "
        "walks in."),
    "rewrite in the past tense": (
        "Rewrite the following text in the past tense.\n\nEvery morning Anna walks to the bakery at the corner of "
        "her street. She buys a loaf of bread and two croissants, and she talks with the baker about the weather. "
        "Then she goes home, makes a pot of coffee and reads the newspaper at the kitchen table while her cat "
        "sleeps on the chair beside her."),
    "fix the grammar": (
        "Fix the grammar of the following text.\n\nMe and my brother goes to the park every weekends. We plays "
        "football with our friends and sometime we forgets the time. Last week my mother have to come and find us "
        "because it were already dark."),
    "rename a variable": (
        "Rename the variable `tmp` to `total` in the following Python code. Change nothing else and return the "
        "whole code.\n\n```python\ndef average(values):\n    tmp = 0\n    for value in values:\n        tmp += "
        "value\n    if not values:\n        return 0\n    return tmp / len(values)\n```"),
}


def truncated_copy(model, layers: int):
    """A separate model made of ``model``'s embedding, first ``layers`` layers, final norm and head."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    draft = type(model)(config).eval()
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    draft.load_state_dict(state, strict=False)
    draft.generation_config = copy.deepcopy(model.generation_config)
    return draft


class ForwardCounter:
    """Counts the forwards of ``models`` and records how many tokens each was fed (``fed``, one int per call)."""

    def __init__(self, *models):
        self.count = 0
        self.fed: list[int] = []
        self.handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in models]

    def _hook(self, module, args, kwargs):
        self.count += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.fed.append(ids.shape[1] if ids is not None else 0)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def timed(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def lookup_counts(fed: list[int], prompt_length: int, new_tokens: int) -> tuple[int, int]:
    """``(drafted, accepted)`` tokens of a one-row run from what each target forward was fed.

    Each round feeds the newest token and its drafts (the first round: the prompt and its drafts) and adds
    the accepted drafts plus one token of the target's, so ``accepted = new tokens - rounds``.
    """
    if not fed:
        return 0, 0
    drafted = fed[0] - prompt_length + sum(n - 1 for n in fed[1:])
    return drafted, new_tokens - len(fed)


def task_rows(model, tokenizer, new_tokens: int, repeats: int, lookup: int, tasks: int = len(TASKS)) -> list[dict]:
    """Plain greedy and prompt lookup on the first ``tasks`` of :data:`TASKS`, ours and the reference, alternating.

    Returns one dict per task and implementation: task, impl, prompt and new tokens, the best wall seconds
    of greedy and lookup, the target's forwards of each, drafted and accepted tokens, and ``same`` (the
    lookup's tokens, and the reference's greedy ones, equal ours plain greedy).
    """
    from decoding.conversation import chat_generation_kwargs, chat_prompt

    rows = []
    for task, text in list(TASKS.items())[:tasks]:
        prompt = chat_prompt(tokenizer, text)
        ids = prompt.input_ids
        kwargs = chat_generation_kwargs(model, tokenizer, attention_mask=prompt.attention_mask,
                                        max_new_tokens=new_tokens, do_sample=False)
        methods = {"greedy": {}, "lookup": dict(prompt_lookup_num_tokens=lookup)}
        calls = {"ours": lambda extra: decoding.generate(model, ids, **kwargs, **extra),
                 "reference": lambda extra: model.generate(ids, **kwargs, **extra)}
        outputs, fed = {}, {}

        def counted(impl, method):
            def run():
                counter = ForwardCounter(model)
                try:
                    outputs[impl, method] = calls[impl](methods[method])
                finally:
                    counter.remove()
                fed[impl, method] = counter.fed
            return run

        times = alternating({(impl, method): counted(impl, method) for method in methods for impl in calls}, repeats)
        greedy = outputs["ours", "greedy"]
        for impl in calls:
            new = outputs[impl, "lookup"].shape[1] - ids.shape[1]
            drafted, accepted = lookup_counts(fed[impl, "lookup"], ids.shape[1], new)
            rows.append(dict(task=task, impl=impl, prompt=ids.shape[1], new=new,
                             greedy_new=outputs[impl, "greedy"].shape[1] - ids.shape[1],
                             greedy_s=times[impl, "greedy"][0], lookup_s=times[impl, "lookup"][0],
                             greedy_forwards=len(fed[impl, "greedy"]), lookup_forwards=len(fed[impl, "lookup"]),
                             drafted=drafted, accepted=accepted,
                             same=torch.equal(outputs[impl, "lookup"], greedy)
                             and torch.equal(outputs[impl, "greedy"], greedy)))
    return rows


def task_table(rows: list[dict]) -> str:
    """The markdown table of :func:`task_rows`."""
    lines = ["| task | impl | prompt tokens | new tokens | plain greedy tokens/s | prompt lookup tokens/s | speed-up | "
             "forwards (greedy / lookup) | drafted | accepted | acceptance | same tokens as plain greedy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acceptance = r["accepted"] / r["drafted"] if r["drafted"] else 0.0
        lines.append(f"| {r['task']} | {r['impl']} | {r['prompt']} | {r['new']} | "
                     f"{r['greedy_new'] / r['greedy_s']:.1f} "
                     f"| {r['new'] / r['lookup_s']:.1f} | {r['greedy_s'] / r['lookup_s']:.2f}x | "
                     f"{r['greedy_forwards']} / {r['lookup_forwards']} | {r['drafted']} | {r['accepted']} | "
                     f"{acceptance:.2f} | {r['same']} |")
    return "\n".join(lines)


def section(quick: bool) -> Section:
    """The suite's part (``python -m benchmarks``): prompt lookup on :data:`TASKS` with the built-in model,
    2 threads; 64 new tokens, best of 2 (an estimated 1.5 minutes on an idle 2-core machine; not measured idle),
    or 8 tokens once."""
    warnings.filterwarnings("ignore")
    new_tokens, repeats, lookup = (8, 1, 10) if quick else (64, 2, 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with decoding.load(builtin_model_path(), device="cpu") as (model, tokenizer):
            model.generate(tokenizer("Hello", return_tensors="pt").input_ids, max_new_tokens=2)   # first-call costs
            rows = task_rows(model, tokenizer, new_tokens, repeats, lookup, tasks=2 if quick else len(TASKS))
    finally:
        torch.set_num_threads(threads)
    markdown = (f"Built-in model SmolLM2-135M-Instruct, 2 torch threads, greedy, up to {new_tokens} new tokens (the "
                f"answer may end sooner), prompt lookup with {lookup} tokens (`prompt_lookup_num_tokens`), each task "
                "through the chat template; the four runs of a task alternating, best of "
                f"{repeats}. Speed-up: plain greedy's time / prompt lookup's, the same implementation's. Acceptance: "
                "accepted / drafted tokens, counted from the tokens fed to each forward.\n\n" + task_table(rows))
    figures = {}
    for r in rows:
        if r["impl"] == "ours":
            figures[f"prompt lookup speed-up, {r['task']} (ours)"] = r["greedy_s"] / r["lookup_s"]
            figures[f"prompt lookup acceptance, {r['task']}"] = r["accepted"] / r["drafted"] if r["drafted"] else 0.0
    return Section(title="Speculation (prompt lookup) on input-grounded tasks", markdown=markdown, figures=figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exit-layer", type=int, default=15)
    parser.add_argument("--lookup-tokens", type=int, default=10)
    parser.add_argument("--no-tasks", action="store_true", help="only the copy task's methods, not the task table")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = builtin_model_path()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    draft = truncated_copy(model, args.exit_layer)
    messages = [{"role": "user", "content": "Copy the following paragraph exactly, word for word:\n\n" + PARAGRAPH}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    common = dict(max_new_tokens=args.new_tokens, do_sample=False)
    methods = [
        ("plain greedy", {}),
        (f"prompt lookup ({args.lookup_tokens})", dict(prompt_lookup_num_tokens=args.lookup_tokens)),
        (f"early exit (layer {args.exit_layer})", dict(assistant_early_exit=args.exit_layer)),
        (f"draft model ({args.exit_layer} layers)", dict(assistant_model=draft)),
    ]
    model.generate(ids, max_new_tokens=4)  # first-call costs (allocator, kernels) out of the measurements
    decoding.generate(model, ids, max_new_tokens=4)
    print(f"built-in model SmolLM2-135M-Instruct; prompt {ids.shape[1]} tokens; {args.new_tokens} new tokens; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    header = (f"{'method':<26}{'impl':<11}{'tok/s':>8}{'vs greedy':>11}{'forwards':>10}{'same as greedy':>16}"
              f"{'accept':>8}")
    print(header)
    greedy_tokens, greedy_seconds = None, None
    for label, extra in methods:
        for impl in ("decoding", "reference"):
            counter = ForwardCounter(model, draft)
            if impl == "decoding":
                seconds, out = timed(lambda: decoding.generate(model, ids, return_dict_in_generate=True, **common,
                                                               **extra), args.repeats)
                sequences = out.sequences
                stats = out.trace.get("speculation") if out.trace else None
            else:
                seconds, sequences = timed(lambda: model.generate(ids, **common, **extra), args.repeats)
                stats = None
            counter.remove()
            new = sequences.shape[1] - ids.shape[1]
            if greedy_tokens is None:
                greedy_tokens, greedy_seconds = sequences, seconds
            accept = f"{stats.acceptance_rate:.2f}" if stats is not None else "-"
            print(f"{label:<26}{impl:<11}{new / seconds:>8.1f}{greedy_seconds / seconds:>10.2f}x"
                  f"{counter.count // args.repeats:>10}{str(torch.equal(sequences, greedy_tokens)):>16}{accept:>8}",
                  flush=True)
    if args.no_tasks:
        return
    print(f"\nprompt lookup ({args.lookup_tokens}) on input-grounded tasks, through the chat template; best of "
          f"{args.repeats}")
    print(task_table(task_rows(model, tokenizer, args.new_tokens, args.repeats, args.lookup_tokens)))


if __name__ == "__main__":
    main()
