"""Beam search and beam sampling speed of decoding.generate against model.generate, side by side.

Reports ms per generated step for both and the ratio (reference time / ours; > 1 means we are
faster). Each measurement keeps the best of several repeats. No eos, so every run takes the same
number of steps.

    python benchmarks/beam.py                    # tiny Llama (loop overhead dominates)
    python benchmarks/beam.py --model PATH       # any local Hugging Face folder
"""

from __future__ import annotations

import torch

from common import best_time, parser, setup  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402


def main() -> None:
    p = parser(__doc__, new_tokens=50)
    p.add_argument("--num-beams", type=int, default=4)
    args = p.parse_args()
    model, name, ids = setup(args)
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
        if not isinstance(ours_out, torch.Tensor):   # an output class (GenerateOutput or the beam one)
            reference_out, ours_out = reference_out.sequences, ours_out.sequences
        reference = best_time(lambda: model.generate(ids, **common, **kwargs), args.repeats)
        ours = best_time(lambda: decoding.generate(model, ids, **common, **kwargs), args.repeats)
        per = 1000 / args.new_tokens
        print(f"{label:<28}{reference * per:>19.3f}{ours * per:>14.3f}{reference / ours:>7.2f}x"
              f"{str(torch.equal(reference_out, ours_out)):>13}")


if __name__ == "__main__":
    main()
