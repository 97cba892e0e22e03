"""Diverse (group) beam search against transformers 4.55.4's ``model.generate``, token for token.

Sequences equal, ``sequences_scores``, per-step processed scores and raw logits within 1e-5, over
tiny models of every architecture, padded batches, group counts and sizes, length penalties, the
three early-stopping rules, eos ids that the search meets, and processors beside the diversity
penalty. ``beam_indices`` are ours by design (docs/diverse-beam-search.md): the flat row each token
came from, checked against the returned scores instead.
"""

import torch
from hypothesis import event, given
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model
from tests.reference import assert_same_steps, both

ARCHS = sorted(ARCHITECTURES)


def emitted(model, ids, mask, steps, early, **kwargs):
    """Tokens of the reference's diverse search without eos: eos candidates that the search will meet
    (``early``: only the first two new tokens of each row, so that whole groups finish and stop early)."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None, pad_token_id=PAD,
                         **kwargs)
    return out[:, ids.shape[1]:ids.shape[1] + (2 if early else steps)].reshape(-1).tolist()


def assert_indices_explain_scores(out, prompt_length, length_penalty):
    """Each returned row's score is the sum of ``out.scores[t][beam_indices[r, t], token]``, length-normalised."""
    for row in range(out.sequences.shape[0]):
        steps = [t for t in range(out.beam_indices.shape[1]) if out.beam_indices[row, t] >= 0]
        total = sum(float(out.scores[t][out.beam_indices[row, t], out.sequences[row, prompt_length + t]])
                    for t in steps)
        expected = total / len(steps) ** length_penalty
        assert abs(expected - float(out.sequences_scores[row])) < 1e-3 * max(1.0, abs(expected))


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       groups=st.integers(2, 3), group_size=st.integers(1, 3), nrs=st.integers(1, 4), steps=st.integers(1, 8),
       penalty=st.floats(0.05, 4.0), length_penalty=st.floats(-1.0, 2.0),
       early_stopping=st.sampled_from([False, True, "never"]), eos_pick=st.integers(-1, 20), early=st.booleans(),
       extra=st.sampled_from([{}, {"no_repeat_ngram_size": 2}, {"min_new_tokens": 2}, {"bad_words_ids": [[7]]}]))
def test_diverse_beam_search_matches_4_55(arch, batch, seed, groups, group_size, nrs, steps, penalty, length_penalty,
                                          early_stopping, eos_pick, early, extra):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    num_beams = groups * group_size
    kwargs = dict(attention_mask=mask, max_new_tokens=steps, num_beams=num_beams, num_beam_groups=groups,
                  diversity_penalty=penalty, num_return_sequences=min(nrs, num_beams), pad_token_id=PAD,
                  length_penalty=length_penalty, early_stopping=early_stopping, **extra)
    if eos_pick >= 0:   # an eos id that some beam emits, so hypotheses finish early
        search = {k: v for k, v in kwargs.items() if k not in ("attention_mask", "max_new_tokens", "pad_token_id")}
        tokens = emitted(model, ids, mask, steps, early, **search)
        kwargs["eos_token_id"] = tokens[eos_pick % len(tokens)]
    else:
        kwargs["eos_token_id"] = None
    reference, ours = both(model, ids, seed, return_dict_in_generate=True, output_scores=True, output_logits=True,
                           **kwargs)
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert_same_steps(reference.scores, ours.scores)
    assert_same_steps(reference.logits, ours.logits)
    assert_indices_explain_scores(ours, ids.shape[1], length_penalty)
    event(f"stopped before max_new_tokens: {len(ours.scores) < steps}")
    eos = kwargs["eos_token_id"]
    event(f"eos in a returned hypothesis: {eos is not None and bool((ours.sequences[:, ids.shape[1]:] == eos).any())}")


@given(seed=st.integers(0, 10_000), penalty=st.floats(0.1, 3.0))
def test_plain_output_and_generation_config_match_4_55(seed, penalty):
    """Without return_dict_in_generate, and with the knobs in a GenerationConfig."""
    import transformers

    model = tiny_model("llama")
    ids, mask = prompts(2, seed)
    config = transformers.GenerationConfig(num_beams=4, num_beam_groups=2, diversity_penalty=penalty,
                                           max_new_tokens=5, pad_token_id=PAD, eos_token_id=None)
    reference, ours = both(model, ids, seed, attention_mask=mask, generation_config=config)
    assert torch.equal(reference, ours)
    assert torch.equal(ours, decoding.generate(model, ids, attention_mask=mask, num_beams=4, num_beam_groups=2,
                                               diversity_penalty=penalty, max_new_tokens=5, pad_token_id=PAD,
                                               eos_token_id=None))


@given(arch=st.sampled_from(ARCHS), seed=st.integers(0, 10_000), groups=st.integers(2, 3),
       penalty=st.floats(0.05, 2.0), early_stopping=st.sampled_from([False, True, "never"]),
       length_penalty=st.floats(-1.0, 2.0))
def test_groups_that_finish_early_end_the_search_as_4_55(arch, seed, groups, penalty, early_stopping, length_penalty):
    """One beam per group and eos = a token every group meets at its second step: the groups finish and
    the search stops before max_new_tokens (the early-stopping rule of each group, then all done)."""
    model = tiny_model(arch)
    ids, mask = prompts(1, seed)
    kwargs = dict(attention_mask=mask, num_beams=groups, num_beam_groups=groups, diversity_penalty=penalty,
                  pad_token_id=PAD, num_return_sequences=groups)
    plain = model.generate(ids, max_new_tokens=8, eos_token_id=None, **kwargs)
    eos = int(plain[0, ids.shape[1] + 1])
    reference, ours = both(model, ids, seed, max_new_tokens=8, eos_token_id=eos, early_stopping=early_stopping,
                           length_penalty=length_penalty, return_dict_in_generate=True, output_scores=True, **kwargs)
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert_same_steps(reference.scores, ours.scores)
    event(f"stopped before max_new_tokens: {len(ours.scores) < 8}")
