"""decoding.generate against model.generate, token for token, on tiny models of 9 architectures."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same, both, emitted

ARCHS = sorted(ARCHITECTURES)


def eos_choices(model, ids, mask, seed, steps, **kwargs):
    """Tokens the model emits in row 0 (so choosing one as eos makes some rows stop early)."""
    return emitted(model, ids, mask, seed, steps, PAD, **kwargs)[0].tolist()


sampling_params = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.3, 0.7, 1.0, 1.3, 2.0]),
    "top_k": st.sampled_from([0, 1, 5, 50, 600]),
    "top_p": st.sampled_from([0.05, 0.3, 0.8, 0.95, 1.0]),   # 0 is refused with sampling (test_validation)
})


@settings(max_examples=150)
@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 4), seed=st.integers(0, 10_000),
       do_sample=st.booleans(), params=sampling_params, steps=st.integers(1, 14),
       eos_pick=st.integers(0, 13), multi_eos=st.booleans(), nrs=st.integers(1, 2))
def test_matches_reference(arch, batch, seed, do_sample, params, steps, eos_pick, multi_eos, nrs):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    kwargs = dict(do_sample=do_sample, **(params if do_sample else {}))
    if not do_sample:
        nrs = 1
    emitted = eos_choices(model, ids, mask, seed, steps, **kwargs, num_return_sequences=nrs)
    eos = emitted[eos_pick % len(emitted)]
    eos_token_id = [eos, EOS] if multi_eos else eos
    reference, ours = both(model, ids, seed, attention_mask=mask, max_new_tokens=steps,
                           eos_token_id=eos_token_id, pad_token_id=PAD, num_return_sequences=nrs,
                           return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs)
    assert_same(reference, ours)


def test_some_rows_hit_eos_and_others_do_not():
    """The hypothesis search above relies on this: eos chosen from row 0 stops row 0 early only."""
    model = tiny_model("llama")
    ids, mask = prompts(4, 3)
    emitted = eos_choices(model, ids, mask, 3, 12)
    reference, ours = both(model, ids, 3, attention_mask=mask, max_new_tokens=12, eos_token_id=emitted[2],
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                           output_logits=True)
    assert_same(reference, ours)
    generated = ours.sequences[:, ids.shape[1]:]
    finished = (generated == emitted[2]).any(-1)
    assert finished[0] and not finished.all()
    assert (generated[0, 3:] == PAD).all()  # padded after eos


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_greedy_and_sampled(arch):
    model = tiny_model(arch)
    ids, mask = prompts(3, 11)
    for kwargs in (dict(), dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)):
        reference, ours = both(model, ids, 5, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD,
                               return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs)
        assert_same(reference, ours)


def test_sampling_default_top_k_is_50():
    """do_sample=True without top_k still applies top-k 50, as the reference does."""
    model = tiny_model("llama")
    ids, mask = prompts(1, 0)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, do_sample=True,
                             return_dict_in_generate=True, output_scores=True)
    assert int(torch.isfinite(ours.scores[0]).sum()) == 50


def test_without_attention_mask_inferred_from_pad():
    model = tiny_model("gpt2")
    ids, _ = prompts(3, 4)
    reference, ours = both(model, ids, 0, max_new_tokens=8, pad_token_id=PAD, eos_token_id=EOS,
                           return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(reference, ours)


def test_use_cache_false_matches():
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 5)
    reference, ours = both(model, ids, 1, attention_mask=mask, max_new_tokens=6, use_cache=False,
                           do_sample=True, return_dict_in_generate=True, output_scores=True,
                           output_logits=True)
    assert_same(reference, ours)


def test_default_output_is_tensor_and_max_length():
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    torch.manual_seed(0)
    reference = model.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 4)
    ours = decoding.generate(model, ids, attention_mask=mask, max_length=ids.shape[1] + 4)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.long
    assert torch.equal(reference, ours)


def test_default_length_is_twenty_new_tokens():
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    with pytest.warns(UserWarning, match="max_new_tokens"):
        ours = decoding.generate(model, ids, eos_token_id=None)
    assert ours.shape == (1, 23)
    assert torch.equal(ours, model.generate(ids, eos_token_id=None))


def test_no_input_ids_starts_from_bos():
    model = tiny_model("llama")
    assert torch.equal(decoding.generate(model, max_new_tokens=5), model.generate(max_new_tokens=5))


def test_eos_and_pad_read_from_model_generation_config():
    model = tiny_model("llama")
    ids, mask = prompts(3, 8)
    emitted = eos_choices(model, ids, mask, 0, 10)
    saved = model.generation_config.eos_token_id
    try:
        model.generation_config.eos_token_id = [emitted[1], 7]
        reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=10,
                               return_dict_in_generate=True, output_scores=True, output_logits=True)
    finally:
        model.generation_config.eos_token_id = saved
    assert_same(reference, ours)
    assert (ours.sequences[0, ids.shape[1] + 2:] == PAD).all()


def test_generation_config_argument_and_keyword_override():
    from transformers import GenerationConfig
    model = tiny_model("mistral")
    ids, mask = prompts(2, 2)
    config = GenerationConfig(do_sample=True, temperature=0.5, top_k=7, max_new_tokens=9)
    for extra in ({}, {"top_k": 3, "max_new_tokens": 4}):
        reference, ours = both(model, ids, 9, attention_mask=mask, generation_config=config,
                               return_dict_in_generate=True, output_scores=True, output_logits=True, **extra)
        assert_same(reference, ours)
    assert ours.sequences.shape[1] == ids.shape[1] + 4
    assert config.top_k == 7  # the user's config is not modified


def test_user_processors_and_criteria_from_both_libraries():
    from transformers import (MaxLengthCriteria as HFMaxLength, StoppingCriteriaList as HFCriteria,
                              TopKLogitsWarper as HFTopK)
    model = tiny_model("llama")
    ids, mask = prompts(2, 6)
    processors = [decoding.TemperatureLogitsWarper(0.6), HFTopK(5)]
    reference, ours = both(model, ids, 4, attention_mask=mask, max_new_tokens=12, do_sample=True,
                           logits_processor=processors, stopping_criteria=HFCriteria([HFMaxLength(ids.shape[1] + 5)]),
                           return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(reference, ours)
    assert ours.sequences.shape[1] == ids.shape[1] + 5
    # ours inside the reference's loop
    torch.manual_seed(4)
    a = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                       logits_processor=[decoding.TopPLogitsWarper(0.5)])
    torch.manual_seed(4)
    b = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                          logits_processor=[decoding.TopPLogitsWarper(0.5)])
    assert torch.equal(a, b)


class StopAfterToken(decoding.StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores=None, **kwargs):
        return input_ids[:, -1] == self.token


def test_custom_criterion_without_eos_keeps_real_tokens():
    """With eos=None, a row stopped by a custom criterion is not padded (the reference's rule)."""
    model = tiny_model("llama")
    ids, mask = prompts(3, 2)
    emitted = eos_choices(model, ids, mask, 0, 10)
    reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=10, eos_token_id=None,
                           pad_token_id=PAD, stopping_criteria=[StopAfterToken(emitted[1])],
                           return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(reference, ours)


def test_returned_cache_has_length_minus_one():
    model = tiny_model("llama")
    ids, mask = prompts(2, 3)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None,
                            return_dict_in_generate=True)
    assert out.past_key_values.get_seq_length() == out.sequences.shape[1] - 1
    assert "sequences" in out and out["sequences"] is out.sequences and "scores" not in out


def test_attentions_and_hidden_states_match():
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"  # sdpa cannot return attention weights
    try:
        ids, mask = prompts(2, 4)
        reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True,
                               output_attentions=True, output_hidden_states=True, output_scores=True,
                               output_logits=True)
    finally:
        model.config._attn_implementation = "sdpa"
    assert_same(reference, ours)
    for name in ("attentions", "hidden_states"):
        theirs, mine = getattr(reference, name), getattr(ours, name)
        assert len(theirs) == len(mine) == 4
        for step_r, step_o in zip(theirs, mine):
            assert len(step_r) == len(step_o)
            for r, o in zip(step_r, step_o):
                torch.testing.assert_close(o, r, atol=1e-6, rtol=0)
