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
import decoding  # noqa: E402
from decoding.builtin import builtin_model_path  # noqa: E402

PARAGRAPH = (
    "The lighthouse stood on a narrow spit of rock at the mouth of the harbour. Every evening the keeper climbed "
    "the one hundred and twelve steps to the lamp room, trimmed the wick, polished the great lens and wound the "
    "clockwork that turned the light. Ships coming home in the dark looked for its slow white flash, two seconds "
    "on and eight seconds off, and knew that they were safe.")


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
    def __init__(self, *models):
        self.count = 0
        self.handles = [m.register_forward_pre_hook(self._hook) for m in models]

    def _hook(self, *args):
        self.count += 1


def timed(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exit-layer", type=int, default=15)
    parser.add_argument("--lookup-tokens", type=int, default=10)
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
            for handle in counter.handles:
                handle.remove()
            new = sequences.shape[1] - ids.shape[1]
            if greedy_tokens is None:
                greedy_tokens, greedy_seconds = sequences, seconds
            accept = f"{stats.acceptance_rate:.2f}" if stats is not None else "-"
            print(f"{label:<26}{impl:<11}{new / seconds:>8.1f}{greedy_seconds / seconds:>10.2f}x"
                  f"{counter.count // args.repeats:>10}{str(torch.equal(sequences, greedy_tokens)):>16}{accept:>8}",
                  flush=True)


if __name__ == "__main__":
    main()
