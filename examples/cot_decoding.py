"""CoT-decoding (Wang and Zhou 2024, "Chain-of-Thought Reasoning Without Prompting", arXiv:2402.10200).

Greedy decoding commits to its first token. CoT-decoding instead branches on the top-k first tokens,
continues each branch greedily, and keeps the branch the model is most confident about: the one
whose continuation has the largest mean margin between the probabilities of its top two tokens at
each step (the paper's Delta; it averages over the answer's tokens, here over the whole continuation,
eos included).

Through ``decoding.generate(model, ids, strategy=cot_decoding)``: one prefill serves the k branches
(``runner.repeat(k)``), so the prompt is read once, not k times. Each prompt returns its best branch;
``return_dict_in_generate=True`` adds ``trace["margins"]`` ``[batch, k]`` and ``trace["first_tokens"]``.
The branches' pipeline is built for their rows from the call's settings (a ``logits_processor=``
list of yours is not carried into it). Run: python examples/cot_decoding.py
"""

import dataclasses
import functools

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding
from decoding.outputs import GenerateOutput
from decoding.processors import build_pipeline


def cot_decoding(call, k=5):
    """Branch on the top-``k`` first tokens, continue greedily, keep each prompt's most confident branch."""
    rows, runner = call.rows, call.new_runner()
    logits = runner.prefill(call.input_ids)                                   # [rows, vocab]
    first = call.processors(call.input_ids, logits).topk(k, dim=-1).indices   # [rows, k] each branch's first token
    runner.repeat(k)                                                          # rows r, r, .. (k times): one prefill
    context = dataclasses.replace(call.context, attention_mask=call.attention_mask.repeat_interleave(k, dim=0))
    processors = build_pipeline(call.settings, context)
    state = call.new_state(call.input_ids.repeat_interleave(k, dim=0), stream=False)   # streams its answer at the end
    tokens = state.append(first.reshape(-1))
    margin, counted = torch.zeros(rows * k), torch.zeros(rows * k)
    while not state.done:
        logits = runner.step(tokens)
        scores = processors(state.sequences, logits)
        top2 = scores.softmax(dim=-1).topk(2, dim=-1).values                  # [rows * k, 2]
        margin += torch.where(state.unfinished, top2[:, 0] - top2[:, 1], 0.0)
        counted += state.unfinished
        tokens = state.append(scores.argmax(dim=-1))
    margin = (margin / counted.clamp(min=1)).view(rows, k)
    best = margin.argmax(dim=1) + torch.arange(0, rows * k, k)                # [rows] branch rows
    out = call.finish(state, runner)
    call.stream_result(out.sequences[best])
    return GenerateOutput(sequences=out.sequences[best], past_key_values=out.past_key_values,
                          trace={"margins": margin, "first_tokens": first})


def main():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)                  # a random model is unsure of everything: sharpen it
    ids = torch.tensor([[1, 5, 9, 14], [1, 7, 3, 30]])
    out = decoding.generate(model, ids, strategy=functools.partial(cot_decoding, k=4), max_new_tokens=10,
                            return_dict_in_generate=True)
    for prompt in range(ids.shape[0]):
        margins = [round(m, 3) for m in out.trace["margins"][prompt].tolist()]
        print(f"prompt {prompt}: first tokens {out.trace['first_tokens'][prompt].tolist()}, margins {margins}, "
              f"kept {out.sequences[prompt, ids.shape[1]:].tolist()}")
    greedy = decoding.generate(model, ids, max_new_tokens=10)
    print("plain greedy:", greedy[:, ids.shape[1]:].tolist())


if __name__ == "__main__":
    main()
