"""A greedy loop written by hand, run through ``decoding.generate(strategy=...)``.

Everything around the loop comes for free from the call: the resolved settings, the processor
pipeline, the stopping criteria, streaming, ``return_dict_in_generate`` outputs and ``.partial`` on
error. ``--strategy examples/plain_greedy.py:greedy`` runs it from the command line.

Run: python examples/plain_greedy.py
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding


def greedy(call):
    """Greedy search: the highest-scoring token of every row, until every row is done."""
    runner, state = call.new_runner(), call.new_state()
    logits = runner.prefill(call.input_ids)                  # [rows, vocab] float32
    while True:
        scores = call.processors(state.sequences, logits)    # the call's pipeline
        state.record(logits, scores)                         # kept when return_dict_in_generate asks
        tokens = state.append(scores.argmax(dim=-1))         # pads finished rows, stops, streams
        if state.done:
            return call.finish(state, runner)
        logits = runner.step(tokens)


def main():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.tensor([[1, 5, 9, 14], [1, 7, 3, 30]])
    kwargs = dict(max_new_tokens=12, repetition_penalty=1.3)
    ours = decoding.generate(model, ids, strategy=greedy, **kwargs)
    reference = model.generate(ids, **kwargs)
    print(ours.tolist())
    print("identical to model.generate:", torch.equal(ours, reference))


if __name__ == "__main__":
    main()
