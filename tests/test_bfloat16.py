"""bfloat16 models: decoding.generate against model.generate in the same dtype, token for token.

The model's forward runs in bfloat16; both loops upcast the last position's logits to float32 (a copy)
before any processor sees them, so scores, sampling and beam bookkeeping run in float32 on both sides.
The tiny models of tests/models.py are cast with ``.to(torch.bfloat16)``.
"""

import copy
import functools

import torch
from hypothesis import given
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, EOS, PAD, VOCAB, prompts, tiny_model
from tests.reference import assert_same, both, emitted

ARCHS = sorted(ARCHITECTURES)

sampling_params = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.5, 1.0, 1.5]),
    "top_k": st.sampled_from([0, 5, 50]),
    "top_p": st.sampled_from([0.3, 0.9, 1.0]),
})


@functools.lru_cache(maxsize=None)
def bf16_model(arch: str, seed: int = 0):
    """``tiny_model(arch, seed)`` cast to bfloat16 (a copy: the float32 one stays as the other tests use it)."""
    return copy.deepcopy(tiny_model(arch, seed)).to(torch.bfloat16)


def assert_float32_scores(reference, ours):
    """Both return float32 scores and logits (the upcast happens before the processors)."""
    for steps in (reference.scores, ours.scores, reference.logits, ours.logits):
        assert {step.dtype for step in steps} == {torch.float32}


def test_the_models_run_in_bfloat16_and_differ_from_float32():
    """The premise of this file: the cast changes the logits, and ours are the bfloat16 ones upcast."""
    ids, mask = prompts(2, 0)
    model = bf16_model("llama")
    positions = (mask.cumsum(-1) - 1).clamp(min=0)       # the left-padded rows' positions, as generate's
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
        full = tiny_model("llama")(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    assert logits.dtype == torch.bfloat16 and not torch.equal(logits.float(), full)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=1, pad_token_id=PAD,
                            return_dict_in_generate=True, output_logits=True)
    assert out.logits[0].dtype == torch.float32 and torch.equal(out.logits[0], logits.float())


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 4), seed=st.integers(0, 10_000), do_sample=st.booleans(),
       params=sampling_params, steps=st.integers(1, 12), eos_pick=st.integers(-1, 11))
def test_greedy_and_sampling_match_reference(arch, batch, seed, do_sample, params, steps, eos_pick):
    model = bf16_model(arch)
    ids, mask = prompts(batch, seed)                     # left-padded rows of different lengths
    kwargs = dict(do_sample=do_sample, **(params if do_sample else {}))
    eos = None if eos_pick < 0 else int(emitted(model, ids, mask, seed, steps, PAD, **kwargs)[0, eos_pick % steps])
    reference, ours = both(model, ids, seed, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, output_logits=True,
                           **kwargs)
    assert_same(reference, ours)
    assert_float32_scores(reference, ours)


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000), num_beams=st.integers(2, 4),
       nrs=st.integers(1, 2), do_sample=st.booleans(), length_penalty=st.sampled_from([-1.0, 0.0, 1.0, 2.0]),
       steps=st.integers(1, 10))
def test_beam_search_and_beam_sampling_match_reference(arch, batch, seed, num_beams, nrs, do_sample, length_penalty,
                                                       steps):
    model = bf16_model(arch)
    ids, mask = prompts(batch, seed)
    reference, ours = both(model, ids, seed, attention_mask=mask, max_new_tokens=steps, num_beams=num_beams,
                           num_return_sequences=nrs, do_sample=do_sample, length_penalty=length_penalty,
                           eos_token_id=EOS, pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                           output_logits=True)
    assert_same(reference, ours)
    assert torch.equal(reference.beam_indices, ours.beam_indices)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert_float32_scores(reference, ours)


def repetitive_prompt(seed):
    """One row that repeats itself, so prompt lookup finds n-grams to copy."""
    g = torch.Generator().manual_seed(seed)
    piece = torch.randint(3, VOCAB, (int(torch.randint(3, 6, (1,), generator=g)),), generator=g)
    return torch.cat([piece, piece, piece[:2]])[None, :]


@given(arch=st.sampled_from(ARCHS), seed=st.integers(0, 10_000), do_sample=st.booleans(), lookup=st.integers(1, 5),
       ngram=st.integers(1, 3), steps=st.integers(1, 14), padded=st.booleans())
def test_prompt_lookup_matches_reference(arch, seed, do_sample, lookup, ngram, steps, padded):
    model = bf16_model(arch)
    ids = repetitive_prompt(seed)
    mask = torch.ones_like(ids)
    if padded:                                           # a batch of one whose mask is not all ones
        ids = torch.cat([torch.full((1, 2), PAD), ids], dim=1)
        mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), mask], dim=1)
    reference, ours = both(model, ids, seed, attention_mask=mask, max_new_tokens=steps, do_sample=do_sample,
                           prompt_lookup_num_tokens=lookup, max_matching_ngram_size=ngram, eos_token_id=None,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(reference, ours)
    assert_float32_scores(reference, ours)
    if not do_sample:                                    # assisted greedy is plain greedy, in bfloat16 too
        plain = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None, pad_token_id=PAD)
        assert torch.equal(plain, ours.sequences)
