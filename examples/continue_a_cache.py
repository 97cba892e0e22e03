"""Continuing a key/value cache: a second call that computes only what the first did not, and a static cache.

1. The first call returns its cache (``out.past_key_values``, every position but the last token's).
2. The second call gets the whole sequence (the first output plus new text) and that cache: only the
   tokens after the cached positions are fed, and the tokens equal those of ``model.generate`` on the
   whole sequence from scratch.
3. The same call on a fixed-shape static cache (``cache_implementation="static"``) gives the
   reference's static-cache tokens, bit for bit.

Run: python examples/continue_a_cache.py
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding


def main():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    prompt = torch.tensor([[1, 17, 42, 99, 7]])

    first = decoding.generate(model, prompt, max_new_tokens=6, return_dict_in_generate=True)
    cached = first.past_key_values.get_seq_length()
    whole = torch.cat([first.sequences, torch.tensor([[33, 34]])], dim=1)          # the next "turn"
    second = decoding.generate(model, whole, past_key_values=first.past_key_values, max_new_tokens=6)
    scratch = model.generate(whole, max_new_tokens=6, pad_token_id=0)
    assert torch.equal(second, scratch)
    print(f"continued a cache of {cached} positions: fed {whole.shape[1] - cached} tokens instead of "
          f"{whole.shape[1]}; same tokens as model.generate from scratch: {second[0, whole.shape[1]:].tolist()}")

    ours = decoding.generate(model, prompt, max_new_tokens=6, cache_implementation="static",
                             return_dict_in_generate=True)
    reference = model.generate(prompt, max_new_tokens=6, cache_implementation="static", pad_token_id=0)
    assert torch.equal(ours.sequences, reference)
    print(f"static cache ({type(ours.past_key_values).__name__}, {ours.past_key_values.get_max_length()} "
          f"positions): {ours.sequences[0, prompt.shape[1]:].tolist()}, as model.generate's")


if __name__ == "__main__":
    main()
