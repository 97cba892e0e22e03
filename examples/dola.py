"""DoLa (Chuang et al. 2024) on the built-in model: the final layer contrasted with a premature layer.

At every step DoLa reads some earlier ("premature") layers through the output head, picks the one
whose next-token distribution is furthest from the final layer's (Jensen-Shannon divergence), and
scores each token by how much its log-probability grew from that layer to the last, among the tokens
the final layer finds plausible (probability >= 0.1 x the best's). This example prints, per step, the
layer picked and how many tokens stayed plausible, using the same functions the strategy runs
(decoding/strategies/dola.py; docs/dola.md).

DoLa was shown to help factuality on 7B-65B models; on this 135M model it does not beat greedy
decoding (the premature layers know little), so read this as a look inside the method, not a demo
of better answers. Run: python examples/dola.py
"""

import torch

import decoding
from decoding.strategies.dola import contrast, most_divergent, premature_layers

model, tokenizer = decoding.load(device="cpu")
messages = [{"role": "user", "content": "What is the capital of Australia?"}]
input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
steps = 8

out = decoding.generate(model, input_ids, max_new_tokens=steps, dola_layers="high", repetition_penalty=1.2,
                        return_dict_in_generate=True, output_scores=True, output_hidden_states=True)
print("DoLa ('high' layers, repetition_penalty=1.2, the paper's setting):")
print("   ", repr(tokenizer.decode(out.sequences[0, input_ids.shape[1]:])))

# Each step again, from the hidden states the call returned: which layer was contrasted, how many tokens were kept.
layers = premature_layers(model, "high")
head = model.get_output_embeddings()
print(f"candidate premature layers of this {model.config.num_hidden_layers}-layer model: {layers}")
with torch.no_grad():
    for step, (hidden, scores) in enumerate(zip(out.hidden_states, out.scores)):
        final = head(hidden[-1][:, -1]).float()
        premature = torch.stack([head(hidden[j][:, -1]).float() for j in layers])
        picked = most_divergent(final, premature)
        plausible = torch.isfinite(contrast(final, premature[picked, torch.arange(1)])).sum().item()
        token = out.sequences[0, input_ids.shape[1] + step]
        assert torch.isfinite(scores[0, token])
        print(f"  step {step}: layer {layers[picked.item()]:2d}, {plausible:3d} plausible tokens, "
              f"chose {tokenizer.decode(token)!r}")

greedy = decoding.generate(model, input_ids, max_new_tokens=steps)
print("greedy, for comparison:", repr(tokenizer.decode(greedy[0, input_ids.shape[1]:])))
