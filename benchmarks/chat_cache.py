"""Time saved per chat turn by continuing the previous turn's key/value cache (decoding.ChatCache).

A conversation of several turns on the built-in model (or ``--model``): each turn is answered twice,
side by side in this one process and alternating, from scratch (``decoding.chat(model, tok, messages)``:
the whole history prefilled again) and continuing the chat cache of the previous turn
(``chat_cache=``: only the tokens after the shared prefix are fed). Per turn: the prompt's length,
the tokens the cached turn fed, the best time of ``--repeats`` runs of each, their ratio, the time
saved, and whether both answers are the same text (they must be).

    python benchmarks/chat_cache.py                     # built-in SmolLM2-135M-Instruct, 4 turns
    python benchmarks/chat_cache.py --turns 6 --new-tokens 48 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch

import common  # noqa: F401  (benchmarks/common.py puts the repository on sys.path)
import decoding  # noqa: E402
from decoding.conversation import chat_prompt  # noqa: E402

SYSTEM = ("You are a patient geography teacher. Answer in one or two short sentences, and mention one fact "
          "about the city's history when you can.")
QUESTIONS = ["What is the capital of France?", "And of Italy?", "Which of the two cities is older?",
             "Name a river that flows through each of them.", "Which one has more inhabitants?",
             "Suggest one museum to visit in each city."]


def timed(fn) -> tuple[float, str]:
    start = time.perf_counter()
    answer = fn()
    return time.perf_counter() - start, answer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a local Hugging Face folder with a chat template (default: the built-in model)")
    p.add_argument("--turns", type=int, default=4, help=f"turns of the conversation (at most {len(QUESTIONS)})")
    p.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens of each answer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = decoding.load(args.model) if args.model else decoding.load()

    messages = [{"role": "system", "content": SYSTEM}]
    chat_cache = decoding.ChatCache()
    kwargs = dict(max_new_tokens=args.new_tokens)
    print(f"model: {args.model or 'built-in SmolLM2-135M-Instruct'}, torch threads: {torch.get_num_threads()}, "
          f"max_new_tokens {args.new_tokens}, best of {args.repeats}")
    print(f"{'turn':>4} {'prompt':>6} {'fed':>5} {'scratch s':>9} {'cached s':>9} {'ratio':>6} {'saved s':>8}  same")
    total_scratch = total_cached = 0.0
    for turn, question in enumerate(QUESTIONS[:args.turns], 1):
        messages.append({"role": "user", "content": question})
        prompt_length = chat_prompt(tokenizer, messages).input_ids.shape[1]
        best_scratch = best_cached = float("inf")
        for _ in range(args.repeats):   # alternate the two, each from the same starting point
            seconds, scratch_answer = timed(lambda: decoding.chat(model, tokenizer, messages, **kwargs))
            best_scratch = min(best_scratch, seconds)
            attempt = copy.deepcopy(chat_cache)
            seconds, cached_answer = timed(lambda: decoding.chat(model, tokenizer, messages, chat_cache=attempt,
                                                                 **kwargs))
            best_cached = min(best_cached, seconds)
        chat_cache = attempt
        total_scratch, total_cached = total_scratch + best_scratch, total_cached + best_cached
        print(f"{turn:>4} {prompt_length:>6} {chat_cache.fed:>5} {best_scratch:>9.3f} {best_cached:>9.3f} "
              f"{best_cached / best_scratch:>6.2f} {best_scratch - best_cached:>8.3f}  "
              f"{scratch_answer == cached_answer}")
        messages.append({"role": "assistant", "content": cached_answer})
    print(f"all turns: from scratch {total_scratch:.3f} s, with the chat cache {total_cached:.3f} s "
          f"(ratio {total_cached / total_scratch:.2f})")


if __name__ == "__main__":
    main()
