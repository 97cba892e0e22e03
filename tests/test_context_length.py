"""Prompts at or past the model's context (``max_position_embeddings``, 256 for the tiny models).

With no length set, the reference stops at the context: a longer prompt gets one clear error. With an
explicit length, rotary (RoPE) models run past the context in the reference, and so here; models with
learned position embeddings (GPT-2, OPT) fail inside their forward there, and are refused here first.
"""

import warnings

import pytest
import torch

import decoding
from decoding.inputs import has_learned_positions
from tests.models import tiny_model

CONTEXT = 256


def long_prompt(length: int, rows: int = 1, pads: int = 0):
    ids = torch.randint(3, 500, (rows, length), generator=torch.Generator().manual_seed(length))
    mask = torch.ones_like(ids)
    ids[:, :pads], mask[:, :pads] = 0, 0
    return ids, mask


@pytest.fixture
def counted():
    """``counted(arch)``: the tiny model with a count of its forward calls."""
    handles = []

    def make(arch):
        model = tiny_model(arch)
        model.forward_calls = []
        handles.append(model.register_forward_pre_hook(lambda *args: model.forward_calls.append(1)))
        return model

    yield make
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("arch, length", [("llama", 300), ("gpt2", 300), ("llama", CONTEXT), ("opt", CONTEXT)])
def test_no_length_set_and_a_prompt_at_the_context_is_one_clear_error(counted, arch, length):
    model = counted(arch)
    ids, mask = long_prompt(length)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=rf"prompt is {length} tokens long.*context .*is {CONTEXT} tokens.*"
                                             r"at most 255 tokens, or pass max_new_tokens") as info:
            decoding.generate(model, ids, attention_mask=mask)
    assert not [w for w in caught if "new tokens" in str(w.message)]   # no warning with a negative count first
    assert model.forward_calls == []
    with pytest.raises(ValueError, match="Input length of input_ids"):   # the reference refuses it too
        model.generate(ids, attention_mask=mask)
    learned = "learned" in str(info.value)
    assert learned == has_learned_positions(model)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "qwen2"])
def test_rotary_models_run_past_the_context_as_the_reference(arch):
    model = tiny_model(arch)
    ids, mask = long_prompt(300)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4)
    assert torch.equal(ours, model.generate(ids, attention_mask=mask, max_new_tokens=4))


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_learned_positions_run_up_to_the_context_as_the_reference(arch):
    model = tiny_model(arch)
    for length, pads, new in [(254, 0, 3), (CONTEXT, 0, 1), (CONTEXT, 2, 3)]:   # real tokens + new - 1 <= 256
        ids, mask = long_prompt(length, rows=2, pads=pads)
        ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=new, pad_token_id=0)
        assert torch.equal(ours, model.generate(ids, attention_mask=mask, max_new_tokens=new, pad_token_id=0))


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
@pytest.mark.parametrize("length, pads, new, fix", [
    (254, 0, 4, r"max_new_tokens <= 3"), (CONTEXT, 2, 4, r"max_new_tokens <= 3"), (CONTEXT, 0, 2, r"<= 1"),
    (300, 0, 3, r"shorten the prompt to at most 256 tokens")])
def test_learned_positions_past_the_context_are_refused_before_any_forward(counted, arch, length, pads, new, fix):
    model = counted(arch)
    ids, mask = long_prompt(length, rows=2, pads=pads)
    with pytest.raises(ValueError, match=rf"learned position embeddings for {CONTEXT} positions.*{fix}"):
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=new, pad_token_id=0)
    assert model.forward_calls == []
    with pytest.raises(IndexError):   # where the reference fails inside the model
        model.generate(ids, attention_mask=mask, max_new_tokens=new, pad_token_id=0)


def test_an_explicit_max_length_past_the_context_is_refused_too(counted):
    model = counted("gpt2")
    ids, mask = long_prompt(250)
    with pytest.raises(ValueError, match=r"max_new_tokens <= 7"):
        decoding.generate(model, ids, attention_mask=mask, max_length=CONTEXT + 8)
    assert model.forward_calls == []
