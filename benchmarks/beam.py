"""Beam search and beam sampling speed of decoding.generate against model.generate, side by side.

Reports ms per generated step for both and the ratio (reference time / ours; > 1 means we are
faster). Each measurement keeps the best of several repeats. No eos, so every run takes the same
number of steps.

    python benchmarks/beam.py                    # tiny Llama (loop overhead dominates)
    python benchmarks/beam.py --model PATH       # any local Hugging Face folder
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import decoding  # noqa: E402


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local Hugging Face folder (default: a tiny random Llama)")
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        name = args.model
    else:
        from tests.models import tiny_model
        model, name = tiny_model("llama"), "tiny random Llama (2 layers, hidden 64, vocab 512)"
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (args.batch, 16), generator=torch.Generator().manual_seed(0))
    common = dict(max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=0, num_beams=args.num_beams)

    print(f"model: {name}; batch {args.batch}; {args.num_beams} beams; {args.new_tokens} new tokens; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'strategy':<28}{'reference ms/step':>19}{'ours ms/step':>14}{'ratio':>8}{'same tokens':>13}")
    for label, kwargs in [("beam search", {}),
                          ("beam search, scores", dict(return_dict_in_generate=True, output_scores=True)),
                          ("beam sample T=0.7 top-k=50", dict(do_sample=True, temperature=0.7))]:
        torch.manual_seed(0)
        reference_out = model.generate(ids, **common, **kwargs)
        torch.manual_seed(0)
        ours_out = decoding.generate(model, ids, **common, **kwargs)
        if isinstance(ours_out, decoding.GenerateOutput):
            reference_out, ours_out = reference_out.sequences, ours_out.sequences
        reference = best_time(lambda: model.generate(ids, **common, **kwargs), args.repeats)
        ours = best_time(lambda: decoding.generate(model, ids, **common, **kwargs), args.repeats)
        per = 1000 / args.new_tokens
        print(f"{label:<28}{reference * per:>19.3f}{ours * per:>14.3f}{reference / ours:>7.2f}x"
              f"{str(torch.equal(reference_out, ours_out)):>13}")


if __name__ == "__main__":
    main()
