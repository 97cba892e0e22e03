"""Constrained beam search on the built-in model: make the continuation use a word it would not choose.

``force_words_ids`` lists what must appear: ``[ids]`` a phrase, ``[[ids], [ids]]`` one of several
(here "umbrella" or "umbrellas", with the leading space the tokenizer gives a word inside a sentence).
Beams that have met more of the constraints keep places even when they score lower (the banks of
Post and Vilar 2018), and only sequences that meet every constraint are returned (docs/constrained-beam-search.md).

Run: python examples/constrained_beam_search.py   (the built-in model is fetched once, then cached)
"""

import decoding
from decoding.constraints import satisfies

PROMPT = "The best way to spend a rainy afternoon is"

with decoding.load(quantization=None, device="cpu") as (model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    settings = dict(max_new_tokens=16, num_beams=4, pad_token_id=tokenizer.eos_token_id)
    words = [tokenizer(" umbrella", add_special_tokens=False).input_ids,
             tokenizer(" umbrellas", add_special_tokens=False).input_ids]

    plain = decoding.generate(model, ids, **settings)
    constrained = decoding.generate(model, ids, force_words_ids=[words], **settings)
    # the same, written with the constraint classes
    same = decoding.generate(model, ids, constraints=[decoding.DisjunctiveConstraint(words)], **settings)

    for title, out in (("beam search", plain), ("with force_words_ids", constrained)):
        print(f"{title}: {tokenizer.decode(out[0], skip_special_tokens=True)!r}")
    assert "umbrella" not in tokenizer.decode(plain[0]) and "umbrella" in tokenizer.decode(constrained[0])
    assert satisfies([decoding.DisjunctiveConstraint(words)], constrained[0].tolist())
    assert constrained.tolist() == same.tolist()
