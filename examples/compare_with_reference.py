"""Check that decoding.generate gives model.generate's tokens, and see where they would differ.

Runs on a small randomly initialised Llama built on the spot, so it needs no download:

    python examples/compare_with_reference.py
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding
from decoding.inputs import left_pad

config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()  # eval(): dropout would draw from the sampling RNG

# Two prompts of different lengths, left padded.
input_ids, attention_mask = left_pad([[1, 17, 42, 99], [1, 5]], pad_token_id=0)
settings = dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=40, top_p=0.95,
                return_dict_in_generate=True, output_scores=True)

torch.manual_seed(1234)
reference = model.generate(input_ids, attention_mask=attention_mask, **settings)
torch.manual_seed(1234)
ours = decoding.generate(model, input_ids, attention_mask=attention_mask, **settings)

same = torch.equal(reference.sequences, ours.sequences)
largest = max(float((r - o).abs().nan_to_num().max()) for r, o in zip(reference.scores, ours.scores))
print("tokens identical:", same)
print("largest score difference:", largest)
if not same:
    row, col = (reference.sequences != ours.sequences).nonzero()[0].tolist()
    print(f"first difference: row {row}, position {col}")
assert same
