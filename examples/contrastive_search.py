"""Contrastive search (Su et al. 2022) on the built-in model: it avoids the loop greedy decoding falls into.

Greedy decoding takes the most likely token every step and, on a small model, soon repeats itself:
here it writes the same sentence twice. Contrastive search keeps the model's top_k candidates and
takes the one that scores best on (1 - alpha) * probability - alpha * (its hidden state's largest
cosine similarity with the context's), so a token whose representation repeats the context is held
back (docs/contrastive-search.md). ``low_memory=True`` scores the candidates one at a time: same tokens.

Uses the built-in SmolLM2-135M-Instruct (fetched and converted once, then cached):

    python examples/contrastive_search.py
"""

import torch

import decoding


def repeated_trigrams(ids: list[int]) -> int:
    """How many of the sequence's word-piece trigrams already appeared earlier in it."""
    trigrams = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    return len(trigrams) - len(set(trigrams))


model, tokenizer = decoding.load(device="cpu")
input_ids = tokenizer("DeepMind Company is", return_tensors="pt").input_ids
new = slice(input_ids.shape[1], None)

greedy = decoding.generate(model, input_ids, max_new_tokens=32)
contrastive = decoding.generate(model, input_ids, max_new_tokens=32, penalty_alpha=0.6, top_k=4)
low_memory = decoding.generate(model, input_ids, max_new_tokens=32, penalty_alpha=0.6, top_k=4, low_memory=True)

for name, out in (("greedy", greedy), ("contrastive search", contrastive)):
    print(f"{name} ({repeated_trigrams(out[0, new].tolist())} repeated trigrams):")
    print("   ", repr(tokenizer.decode(out[0, new])))

assert repeated_trigrams(contrastive[0, new].tolist()) < repeated_trigrams(greedy[0, new].tolist())
assert torch.equal(low_memory, contrastive)
print("low_memory=True: the same tokens")
