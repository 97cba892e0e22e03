"""bfloat16 models: contrastive search, DoLa, constrained and diverse beam search against transformers 4.55.4 in
the same dtype, token for token (the strategies that only 4.55.4 runs natively; tests/test_bfloat16.py has the
others).

One row each: with padded rows 4.55.4's contrastive search has a bug of its own (test_contrastive_search.py) and
its DoLa contrasts every row with one layer (test_dola.py). Diverse beam search: the same tokens; with
``output_scores=True`` 4.55.4 fails in bfloat16 (it writes float32 scores into a bfloat16 buffer, a RuntimeError
from torch) where ours returns them, in float32.
"""

import copy
import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding.constraints import ConstraintsNotMet, call_constraints, satisfies
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model
from tests.reference import assert_same, both

ARCHS = sorted(ARCHITECTURES)


@functools.lru_cache(maxsize=None)
def bf16_model(arch: str):
    """``tiny_model(arch)`` cast to bfloat16 (a copy)."""
    return copy.deepcopy(tiny_model(arch)).to(torch.bfloat16)


STRATEGIES = {
    "contrastive": st.fixed_dictionaries({"penalty_alpha": st.sampled_from([0.3, 0.6]), "top_k": st.integers(2, 5)}),
    "dola": st.fixed_dictionaries({"dola_layers": st.sampled_from(["low", "high", [0, 1]]),
                                   "repetition_penalty": st.sampled_from([1.0, 1.2]), "do_sample": st.booleans()}),
    "constrained": st.fixed_dictionaries({"num_beams": st.integers(2, 4),
                                          "force_words_ids": st.sampled_from([[[5]], [[7, 9]], [[5], [11, 12]]])}),
}


@given(arch=st.sampled_from(ARCHS), seed=st.integers(0, 10_000), steps=st.integers(4, 10),
       knobs=st.one_of(*STRATEGIES.values()))
def test_matches_4_55_in_bfloat16(arch, seed, steps, knobs):
    model = bf16_model(arch)
    ids, mask = prompts(1, seed)
    kwargs = dict(attention_mask=mask, max_new_tokens=steps, eos_token_id=None, pad_token_id=PAD,
                  return_dict_in_generate=True, output_scores=True, **knobs)
    if "force_words_ids" in knobs:     # where 4.55.4 returns a row missing a constraint, ours refuses to
        constraints = call_constraints(None, knobs["force_words_ids"])
        reference = model.generate(ids, **kwargs)
        if not satisfies(constraints, reference.sequences[0].tolist()):
            with pytest.raises(ConstraintsNotMet):
                decoding.generate(model, ids, **kwargs)
            return
    reference, ours = both(model, ids, seed, **kwargs)
    assert_same(reference, ours, scores=False)
    assert len(reference.scores) == len(ours.scores)
    for r, o in zip(reference.scores, ours.scores):
        assert r.dtype == o.dtype == torch.float32
        assert torch.equal(r, o)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_diverse_beam_search_matches_4_55_in_bfloat16_and_keeps_scores_where_4_55_fails(arch):
    model = bf16_model(arch)
    ids, mask = prompts(2, 1)
    knobs = dict(attention_mask=mask, max_new_tokens=6, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                 num_return_sequences=2, pad_token_id=PAD, return_dict_in_generate=True)
    reference, ours = both(model, ids, 0, **knobs)
    assert torch.equal(reference.sequences, ours.sequences)
    assert reference.sequences_scores is None and ours.sequences_scores is None   # they come with output_scores
    with pytest.raises(RuntimeError, match="dtype"):    # 4.55.4 writes float32 scores into a bfloat16 buffer
        model.generate(ids, output_scores=True, **knobs)
    scored = decoding.generate(model, ids, output_scores=True, **knobs)
    assert torch.equal(scored.sequences, ours.sequences) and scored.scores[0].dtype == torch.float32
