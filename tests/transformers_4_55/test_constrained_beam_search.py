"""Constrained beam search against transformers 4.55.4's ``model.generate``.

Where every sequence 4.55.4 returns meets its constraints: the same sequences, token for token, with
``sequences_scores``, per-step scores, raw logits and ``beam_indices``. Where 4.55.4 returns a sequence
that misses one (its fallback at the end; docs/constrained-beam-search.md): ours meet every
constraint, or the call raises :class:`decoding.constraints.ConstraintsNotMet`. The progress tracker
is checked against 4.55.4's ``ConstraintListState`` directly.
"""

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from transformers.generation import ConstraintListState
from transformers.generation import DisjunctiveConstraint as ReferenceDisjunctive
from transformers.generation import PhrasalConstraint as ReferencePhrasal

import decoding
from decoding.constraints import ConstraintProgress, ConstraintsNotMet, call_constraints, satisfies
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same_steps

ARCHS = sorted(ARCHITECTURES)


@st.composite
def word_lists(draw, tokens):
    """``force_words_ids``: 1-2 items, each a phrase of 1-3 ids or 2-3 alternatives with distinct first ids."""
    items = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            items.append(draw(st.lists(st.sampled_from(tokens), min_size=1, max_size=3)))
        else:
            firsts = draw(st.lists(st.sampled_from(tokens), min_size=2, max_size=3, unique=True))
            items.append([[first] + draw(st.lists(st.sampled_from(tokens), max_size=1)) for first in firsts])
    return items


def as_reference(words):
    return [ReferenceDisjunctive(w) if isinstance(w[0], list) else ReferencePhrasal(w) for w in words]


def reference_generate(model, ids, **kwargs):
    """4.55.4's output, and whether it crashed on its own fallback (a hypothesis without beam indices)."""
    try:
        return model.generate(ids, **kwargs), False
    except RuntimeError as error:          # "Could not infer dtype of NoneType": it returned an unconstrained beam
        assert "NoneType" in str(error)
        return model.generate(ids, **{**kwargs, "output_scores": False}), True


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 2), seed=st.integers(0, 10_000),
       num_beams=st.integers(2, 5), nrs=st.integers(1, 3), steps=st.integers(3, 9),
       length_penalty=st.floats(-1.0, 2.0), early_stopping=st.sampled_from([False, True, "never"]),
       as_objects=st.booleans(), eos=st.sampled_from(["none", "model", "emitted"]), data=st.data())
def test_constrained_beam_search_matches_4_55_where_it_meets_the_constraints(
        arch, batch, seed, num_beams, nrs, steps, length_penalty, early_stopping, as_objects, eos, data):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    plain = model.generate(ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=steps, eos_token_id=None,
                           pad_token_id=PAD)
    likely = sorted(set(plain[:, ids.shape[1]:].reshape(-1).tolist()))     # ids the model would write anyway
    words = data.draw(word_lists(likely + [11, 12, 13]))
    eos_id = {"none": None, "model": EOS, "emitted": likely[seed % len(likely)]}[eos]
    kwargs = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=steps, pad_token_id=PAD,
                  num_return_sequences=min(nrs, num_beams), length_penalty=length_penalty,
                  early_stopping=early_stopping, eos_token_id=eos_id, return_dict_in_generate=True,
                  output_scores=True, output_logits=True)
    if as_objects:    # ours, or the very objects 4.55.4 was given (converted)
        reference, crashed = reference_generate(model, ids, constraints=as_reference(words), **kwargs)
        given_objects = call_constraints(None, words) if seed % 2 else as_reference(words)
        ours_kwargs = dict(constraints=given_objects, **kwargs)
    else:
        reference, crashed = reference_generate(model, ids, force_words_ids=words, **kwargs)
        ours_kwargs = dict(force_words_ids=words, **kwargs)
    constraints = call_constraints(None, words)
    reference_met = all(satisfies(constraints, row.tolist()) for row in reference.sequences)
    try:
        ours = decoding.generate(model, ids, **ours_kwargs)
    except ConstraintsNotMet:
        assert not reference_met
        event("4.55 returned a sequence missing a constraint: ours raised ConstraintsNotMet")
        return
    assert all(satisfies(constraints, row.tolist()) for row in ours.sequences)
    if not reference_met:
        event("4.55 returned a sequence missing a constraint: ours returned sequences meeting them")
        return
    event("4.55 met the constraints: matched token for token")
    assert not crashed
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert_same_steps(reference.scores, ours.scores)
    assert_same_steps(reference.logits, ours.logits)
    generated = ours.beam_indices.shape[1]         # 4.55 pads its beam indices to the full width with -1
    assert torch.equal(reference.beam_indices[:, :generated], ours.beam_indices)
    assert bool((reference.beam_indices[:, generated:] == -1).all())


@given(words=word_lists(list(range(3, 9))), tokens=st.lists(st.integers(3, 9), max_size=30))
def test_progress_matches_4_55_constraint_list_state(words, tokens):
    """Reading a sequence from the start: the same met constraints, bank and next tokens as 4.55's tracker."""
    reference = ConstraintListState(as_reference(words))
    reference.reset(tokens)
    ours = ConstraintProgress.read(call_constraints(None, words), tokens)
    assert ours.completed == reference.completed
    assert ours.bank == reference.get_bank()
    assert ours.next_tokens() == (reference.advance() or [])


def test_constraint_classes_refuse_what_4_55_refuses():
    for bad in ([], [-1], ["a"], [1.5]):
        with pytest.raises(ValueError):
            decoding.PhrasalConstraint(bad)
        with pytest.raises(ValueError):
            ReferencePhrasal(bad)
    with pytest.raises(ValueError, match="prefix"):
        decoding.DisjunctiveConstraint([[5], [5, 6]])
    with pytest.raises(ValueError):
        ReferenceDisjunctive([[5], [5, 6]])


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 2), seed=st.integers(0, 10_000), num_beams=st.integers(2, 4),
       steps=st.integers(4, 8), pick=st.integers(0, 40), shift=st.integers(0, 2), two_tokens=st.booleans(),
       use_cache=st.booleans())
def test_one_phrase_near_what_the_model_writes_matches_4_55(arch, batch, seed, num_beams, steps, pick, shift,
                                                            two_tokens, use_cache):
    """A single phrase of 1-2 ids close to the model's own choices: 4.55.4 usually meets it, and then ours is the
    same, token for token (with and without the cache)."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    plain = model.generate(ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=steps, eos_token_id=None,
                           pad_token_id=PAD)
    likely = plain[:, ids.shape[1]:].reshape(-1).tolist()
    phrase = [likely[pick % len(likely)] + shift] + ([likely[(pick + 1) % len(likely)]] if two_tokens else [])
    kwargs = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=steps, pad_token_id=PAD, eos_token_id=EOS,
                  force_words_ids=[phrase], return_dict_in_generate=True, output_scores=True, use_cache=use_cache)
    reference, crashed = reference_generate(model, ids, **kwargs)
    constraints = call_constraints(None, [phrase])
    if not all(satisfies(constraints, row.tolist()) for row in reference.sequences):
        event("4.55 returned a sequence missing the phrase")
        try:
            ours = decoding.generate(model, ids, **kwargs)
        except ConstraintsNotMet:
            return
        assert all(satisfies(constraints, row.tolist()) for row in ours.sequences)
        return
    event("4.55 met the phrase: matched token for token")
    ours = decoding.generate(model, ids, **kwargs)
    assert not crashed
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert_same_steps(reference.scores, ours.scores)
