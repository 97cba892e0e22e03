"""Best-of-N: sample N continuations per prompt, keep the one the model finds most likely.

Run with ``decoding.generate(model, ids, strategy=best_of_n, do_sample=True, num_return_sequences=N)``:
the call already holds each prompt N times (rows ``b * N .. b * N + N - 1``), with the pipeline,
criteria and per-row seeds built for those rows. The loop is the sampling loop plus one line that adds
up each row's log-probability under the model (raw logits, the eos token included, padding after it
excluded); then each prompt keeps its best row.

Run: python examples/best_of_n.py
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import decoding
from decoding.outputs import GenerateOutput


def best_of_n(call):
    """``[batch, length]``: each prompt's most likely of its ``num_return_sequences`` samples."""
    runner, state = call.new_runner(), call.new_state(stream=False)       # streams its answer at the end
    choose, log_prob = call.chooser(state), torch.zeros(call.rows)
    call.processors.reset()
    logits = runner.prefill(call.input_ids)
    while True:
        scores = call.processors(state.sequences, logits)
        running = state.unfinished.clone()
        tokens = state.append(choose(scores))
        call.processors.accept(tokens)
        token_log_prob = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
        log_prob += torch.where(running, token_log_prob, 0.0)
        if state.done:
            break
        logits = runner.step(tokens)
    n = call.settings.num_return_sequences
    best = log_prob.view(-1, n).argmax(dim=1) + torch.arange(0, call.rows, n)      # [batch] row indices
    out = call.finish(state, runner)
    call.stream_result(out.sequences[best])
    return GenerateOutput(sequences=out.sequences[best], past_key_values=out.past_key_values,
                          trace={"log_probs": log_prob.view(-1, n), "best": best})


def main():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.tensor([[1, 5, 9, 14], [1, 7, 3, 30]])
    out = decoding.generate(model, ids, strategy=best_of_n, do_sample=True, num_return_sequences=4,
                            max_new_tokens=10, seed=0, return_dict_in_generate=True)
    for prompt, (row, log_probs) in enumerate(zip(out.sequences.tolist(), out.trace["log_probs"].tolist())):
        print(f"prompt {prompt}: sample log-probs {[round(p, 2) for p in log_probs]} -> best {row[4:]}")


if __name__ == "__main__":
    main()
