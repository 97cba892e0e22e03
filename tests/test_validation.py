"""Bad input is stopped before the first forward pass, with a message naming argument, value and fix."""

import pytest
import torch

import decoding
from tests.models import prompts, tiny_model


@pytest.fixture
def model():
    m = tiny_model("llama")
    calls = []
    handle = m.register_forward_pre_hook(lambda *args: calls.append(1))
    m.forward_calls = calls
    yield m
    handle.remove()


GOOD_IDS = torch.tensor([[5, 6, 7]])

CASES = [
    # (kwargs, exception, message fragment)
    (dict(input_ids=torch.tensor([[5, 512, 7]])), ValueError, r"token id 512 at position \[0, 1\].*\[0, 512\)"),
    (dict(input_ids=torch.tensor([[5, -1, 7]])), ValueError, r"token id -1"),
    (dict(input_ids=torch.tensor([[5.0, 6.0]])), TypeError, r"integer token ids.*\.long\(\)"),
    (dict(input_ids=torch.tensor([5, 6, 7])), ValueError, r"2-D.*input_ids\[None\]"),
    (dict(input_ids=[[5, 6, 7]]), TypeError, r"torch.tensor"),
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), ValueError, r"empty"),
    (dict(attention_mask=torch.ones(1, 4, dtype=torch.long)), ValueError, r"attention_mask has shape \(1, 4\).*\(1, 3\)"),
    (dict(attention_mask=torch.full((1, 3), 2)), ValueError, r"only 0 .* and 1"),
    (dict(do_sample=True, temperature=0.0), ValueError, r"temperature.*do_sample=False"),
    (dict(temperature=-1.0), ValueError, r"temperature.*-1.0"),
    (dict(temperature=float("nan")), ValueError, r"temperature"),
    (dict(do_sample=True, top_k=-1), ValueError, r"top_k.*-1"),
    (dict(do_sample=True, top_k=2.5), ValueError, r"top_k.*2.5"),
    (dict(do_sample=True, top_p=1.5), ValueError, r"top_p.*\[0, 1\].*1.5"),
    (dict(top_p=-0.1), ValueError, r"top_p"),
    (dict(max_new_tokens=0), ValueError, r"max_new_tokens.*greater than 0.*0"),
    (dict(max_new_tokens=-3), ValueError, r"max_new_tokens"),
    (dict(max_new_tokens=None, max_length=3), ValueError, r"Input length of input_ids is 3.*max_length. is set to 3"),
    (dict(max_new_token=5), TypeError, r"'max_new_token' \(did you mean 'max_new_tokens'\?\)"),
    (dict(temprature=0.5), ValueError, r"did you mean 'temperature'"),
    (dict(num_return_sequences=2), ValueError, r"num_return_sequences"),
    (dict(generation_config="greedy"), TypeError, r"GenerationConfig"),
]


@pytest.mark.parametrize("kwargs, error, message", CASES)
def test_bad_input_is_refused_before_any_forward(model, kwargs, error, message):
    kwargs = {"input_ids": GOOD_IDS, "max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=message):
        decoding.generate(model, **kwargs)
    assert model.forward_calls == []


def test_unknown_keyword_is_both_type_and_value_error(model):
    with pytest.raises(decoding.UnknownArgumentError) as info:
        decoding.generate(model, GOOD_IDS, max_new_tokens=2, top_kk=3)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_temperature_zero_is_fine_for_greedy(model):
    out = decoding.generate(model, GOOD_IDS, max_new_tokens=3, temperature=0.0)
    assert torch.equal(out, model.generate(GOOD_IDS, max_new_tokens=3, temperature=0.0))


def test_integer_temperature_is_accepted(model):
    """The reference refuses temperature=2 (an int); we accept it as 2.0 (a documented difference)."""
    ids, mask = prompts(2, 0)
    torch.manual_seed(0)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=2)
    torch.manual_seed(0)
    assert torch.equal(ours, model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=2.0))


def test_unimplemented_knob_is_refused_not_ignored(model):
    knob = next(iter(decoding.config.NOT_YET_IMPLEMENTED), None)
    if knob is None:  # everything is implemented: nothing left to refuse
        return
    default = decoding.config.NOT_YET_IMPLEMENTED[knob]
    value = 3 if default in (None, 0, 1, 1.0, 0.0, False) else None
    with pytest.raises((NotImplementedError, ValueError, TypeError)):
        decoding.generate(model, GOOD_IDS, max_new_tokens=2, **{knob: value})
    assert model.forward_calls == []


class Boom(Exception):
    pass


def test_error_mid_generation_keeps_the_tokens_so_far(model):
    steps = []

    def explode_on_third_step(input_ids, scores):
        steps.append(1)
        if len(steps) == 3:
            raise Boom("processor failed")
        return scores

    ids, mask = prompts(2, 1)
    with pytest.raises(decoding.GenerationInterrupted) as info:
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=10, logits_processor=[explode_on_third_step])
    partial = info.value.partial
    assert isinstance(info.value.__cause__, Boom)
    assert partial.shape == (2, ids.shape[1] + 2)
    full = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=10)
    assert torch.equal(partial, full[:, :partial.shape[1]])
