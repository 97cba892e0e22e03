"""Diverse beam search on the built-in model: beam search's best four continuations are near copies of one
another; split the four beams into four groups with a diversity penalty and they go different ways.

Each group is a beam search of its own; at every step a group's tokens lose ``diversity_penalty`` for each
beam of an earlier group that chose them at this step (Vijayakumar et al. 2018; docs/diverse-beam-search.md).

Run: python examples/diverse_beam_search.py   (the built-in model is fetched once, then cached)
"""

import decoding

PROMPT = "The best way to spend a rainy afternoon is"

with decoding.load(quantization=None, device="cpu") as (model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    settings = dict(max_new_tokens=12, num_beams=4, num_return_sequences=4, pad_token_id=tokenizer.eos_token_id)

    def continuations(**extra):
        out = decoding.generate(model, ids, **settings, **extra)
        return [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in out]

    plain = continuations()
    diverse = continuations(num_beam_groups=4, diversity_penalty=1.5)
    for title, texts in (("beam search", plain), ("diverse beam search", diverse)):
        print(f"{title}:")
        for text in texts:
            print(f"  {PROMPT + text!r}")

    def first_words(texts):
        return {text.split()[0] if text.split() else "" for text in texts}

    print("distinct first words:", len(first_words(plain)), "->", len(first_words(diverse)))
    assert len(set(diverse)) == 4 and len(first_words(diverse)) > len(first_words(plain))
