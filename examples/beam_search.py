"""Beam search: the reference's tokens, every live beam as it runs, per-token scores and the search tree.

Runs on a small randomly initialised Llama built on the spot, so it needs no download:

    python examples/beam_search.py
"""

import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding
from decoding.strategies.beam import path, returned
from decoding.inputs import left_pad

config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()

input_ids, attention_mask = left_pad([[1, 17, 42, 99], [1, 5]], pad_token_id=0)
settings = dict(attention_mask=attention_mask, max_new_tokens=8, num_beams=3, num_return_sequences=2,
                length_penalty=1.0, early_stopping=False, eos_token_id=[2, 7], pad_token_id=0)

# 1. The same hypotheses as model.generate.
comparison = decoding.compare(model, input_ids, **settings)
print("against model.generate:", comparison.summary())
assert comparison.identical


# 2. Every live beam of prompt 0 at every step (model.generate refuses a streamer with beams).
class ShowBeams(decoding.BeamStreamer):
    def on_step(self, step, beams):
        shown = ", ".join(f"{beam.ids} ({beam.score:.2f}, from {beam.parent})" for beam in beams[0])
        print(f"  step {step}: {shown}")

    def on_finish(self, sequences, scores):
        print(f"  returned scores: {[round(s, 3) for s in scores.tolist()]}")


print("live beams of prompt 0:")
out = decoding.generate(model, input_ids, streamer=ShowBeams(), return_dict_in_generate=True, output_scores=True,
                        output_beam_tree=True, **settings)

# 3. Each returned token's log-prob; their sum / length ** length_penalty is the sequence score.
transition = decoding.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
lengths = (out.beam_indices >= 0).sum(-1)
print("sequence scores:", out.sequences_scores.tolist())
print("from the tokens:", (transition.sum(-1) / lengths ** settings["length_penalty"]).tolist())

# 4. The search tree as plain data (JSON-ready): the returned hypotheses are paths in it.
tree = out.trace["beam_tree"]
prompt_length = input_ids.shape[1]
for row, node in enumerate(returned(tree)):
    assert out.sequences[row, prompt_length:prompt_length + len(path(tree, node["id"]))].tolist() == path(tree, node["id"])
print(f"tree: {len(tree)} nodes; first candidate: {json.dumps(tree[len(input_ids)])}")
