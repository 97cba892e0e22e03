"""Greedy and sampling speed of decoding.generate against model.generate, side by side in one run.

Reports ms per token for both and the ratio (reference time / ours; > 1 means we are faster).
Each measurement alternates the two implementations and keeps the best of several repeats, so
machine noise affects both alike.

    python benchmarks/core.py                    # tiny Llama (loop overhead dominates)
    python benchmarks/core.py --model PATH       # any local Hugging Face folder
"""

from __future__ import annotations

import torch

from common import best_time, parser, setup  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402


def main() -> None:
    p = parser(__doc__, new_tokens=100)
    args = p.parse_args()
    model, name, ids = setup(args)
    common = dict(max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=0)

    print(f"model: {name}; batch {args.batch}; {args.new_tokens} new tokens; torch threads {torch.get_num_threads()}")
    print(f"{'strategy':<28}{'reference ms/tok':>18}{'ours ms/tok':>14}{'ratio':>8}{'same tokens':>13}")
    for label, kwargs in [("greedy", {}), ("sample T=0.7 top-p=0.9", dict(do_sample=True, temperature=0.7, top_p=0.9))]:
        torch.manual_seed(0)
        reference_out = model.generate(ids, **common, **kwargs)
        torch.manual_seed(0)
        ours_out = decoding.generate(model, ids, **common, **kwargs)
        reference = best_time(lambda: model.generate(ids, **common, **kwargs), args.repeats)
        ours = best_time(lambda: decoding.generate(model, ids, **common, **kwargs), args.repeats)
        per = 1000 / args.new_tokens
        print(f"{label:<28}{reference * per:>18.3f}{ours * per:>14.3f}{reference / ours:>7.2f}x"
              f"{str(torch.equal(reference_out, ours_out)):>13}")


if __name__ == "__main__":
    main()
