"""Prompt lookup on the built-in model (SmolLM2-135M-Instruct) for an input-grounded task.

Speed is measured in benchmarks/speculative.py; here the deterministic proxy: the tokens equal plain
greedy's and the target model runs at most half as many forward passes as plain greedy needs.
"""

import functools

import torch

import decoding
from decoding.builtin import builtin_model_path

PARAGRAPH = ("The lighthouse stood on a narrow spit of rock at the mouth of the harbour. Every evening the keeper "
             "climbed the one hundred and twelve steps to the lamp room, trimmed the wick and polished the great lens.")


@functools.lru_cache(maxsize=None)
def builtin():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = builtin_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def copy_task_ids(tokenizer):
    messages = [{"role": "user", "content": "Copy the following paragraph exactly, word for word:\n\n" + PARAGRAPH}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)["input_ids"]


def test_prompt_lookup_halves_the_target_forwards_on_a_copy_task():
    model, tokenizer = builtin()
    ids = copy_task_ids(tokenizer)
    new_tokens = 40
    plain = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    out = decoding.generate(model, ids, max_new_tokens=new_tokens, do_sample=False, prompt_lookup_num_tokens=10,
                            return_dict_in_generate=True)
    assert torch.equal(plain, out.sequences)
    plain_forwards = plain.shape[1] - ids.shape[1]          # plain greedy: one forward per new token
    stats = out.trace["speculation"]
    assert stats.target_forwards * 2 <= plain_forwards, (stats.target_forwards, plain_forwards)
    assert stats.acceptance_rate > 0.5
