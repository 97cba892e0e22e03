"""The built-in model through ``decoding.generate`` against ``model.generate``, token for token:
plain (float32), 4-bit NF4 and 8-bit LLM.int8() through bitsandbytes on CPU, greedy and sampled."""

import pytest
import torch

import decoding
from decoding.conversation import chat_generation_kwargs, chat_prompt
from decoding.loading import load

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow."]
SAMPLED = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9)


def _batch(tokenizer, questions):
    """Chat prompts for ``questions``, left padded into one batch: ids and mask ``[rows, len]``."""
    texts = [chat_prompt(tokenizer, q).text for q in questions]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    return batch.input_ids, batch.attention_mask


def _assert_same(model, tokenizer, questions, seed, **kwargs):
    ids, mask = _batch(tokenizer, questions)
    kwargs = chat_generation_kwargs(model, tokenizer, **kwargs)
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, attention_mask=mask, **kwargs)
    assert ours.shape == reference.shape
    assert torch.equal(ours, reference), (tokenizer.batch_decode(ours), tokenizer.batch_decode(reference))
    return ours[:, ids.shape[1]:]


def test_plain_greedy_answers_paris(builtin):
    model, tokenizer = builtin
    new = _assert_same(model, tokenizer, QUESTIONS[:1], seed=0, max_new_tokens=24)
    assert tokenizer.decode(new[0], skip_special_tokens=True) == "The capital of France is Paris."


@pytest.mark.parametrize("seed", [0, 7])
def test_plain_sampled_left_padded_batch(builtin, seed):
    model, tokenizer = builtin
    new = _assert_same(model, tokenizer, QUESTIONS, seed=seed, max_new_tokens=16, **SAMPLED)
    assert new.shape[0] == 2


@pytest.fixture(scope="module", params=["4bit", "8bit"])
def quantized(request, builtin_dir):
    loaded = load(builtin_dir, quantization=request.param, device="cpu")
    yield request.param, loaded
    loaded.close()


def test_quantized_layers_are_bitsandbytes(quantized):
    import bitsandbytes as bnb

    kind, loaded = quantized
    expected = bnb.nn.Linear4bit if kind == "4bit" else bnb.nn.Linear8bitLt
    assert isinstance(loaded.model.model.layers[0].mlp.up_proj, expected)
    assert loaded.model.device.type == "cpu"


def test_quantized_greedy(quantized):
    _, loaded = quantized
    _assert_same(loaded.model, loaded.tokenizer, QUESTIONS[:1], seed=0, max_new_tokens=12)


def test_quantized_sampled(quantized):
    _, loaded = quantized
    _assert_same(loaded.model, loaded.tokenizer, QUESTIONS[:1], seed=3, max_new_tokens=12, **SAMPLED)
