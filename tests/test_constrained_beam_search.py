"""Constrained beam search under transformers 5 (which no longer runs it): checks, the constraint classes,
the documented behaviour (every returned sequence meets its constraints, or ConstraintsNotMet; a phrase in
the prompt counts; banks of alternatives that share a prefix), and invariants. Token-for-token equality
with the last release that runs it natively is in tests/transformers_4_55/test_constrained_beam_search.py."""

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import decoding
from decoding.constraints import ConstraintProgress, ConstraintsNotMet, call_constraints, satisfies
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model
from tests.test_beam_streaming import PlainRecorder

ARCHS = sorted(ARCHITECTURES)
IDS = torch.tensor([[5, 6, 7]])


@pytest.fixture
def model():
    m = tiny_model("llama")
    calls = []
    handle = m.register_forward_pre_hook(lambda *args: calls.append(1))
    m.forward_calls = calls
    yield m
    handle.remove()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(force_words_ids=[[9]]), ValueError, r"force_words_ids.*num_beams > 1.*num_beams=4"),
    (dict(constraints=[decoding.PhrasalConstraint([9])], num_beams=2, do_sample=True), ValueError,
     r"constraints.*does not sample.*do_sample=False"),
    (dict(force_words_ids=[[9]], num_beams=4, num_beam_groups=2, diversity_penalty=1.0), ValueError,
     r"num_beam_groups=1"),
    (dict(force_words_ids=[], num_beams=2), ValueError, r"force_words_ids.*non-empty list"),
    (dict(force_words_ids=[[9, -1]], num_beams=2), ValueError, r"force_words_ids.*\[9, -1\]"),
    (dict(force_words_ids=[[[9], [9, 10]]], num_beams=2), ValueError, r"prefix of another"),
    (dict(constraints=[[9]], num_beams=2), ValueError, r"constraints.*PhrasalConstraint.*force_words_ids"),
    (dict(constraints=[], num_beams=2), ValueError, r"constraints.*non-empty list"),
    (dict(force_words_ids=[[9]], num_beams=2, output_beam_tree=True, return_dict_in_generate=True),
     NotImplementedError, r"tree"),
    (dict(force_words_ids=[[9]], num_beams=2, streamer=decoding.BeamStreamer()), NotImplementedError,
     r"does not stream its beams.*plain streamer"),
])
def test_arguments_are_checked_before_the_first_forward(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        decoding.generate(model, IDS, max_new_tokens=3, **kwargs)
    assert model.forward_calls == []


def test_the_constraint_classes():
    phrase = decoding.PhrasalConstraint([5, 6])
    either = decoding.DisjunctiveConstraint([[7], [8, 9]])
    assert (phrase.longest, either.longest) == (2, 2)
    assert phrase.next_tokens(()) == [5] and phrase.next_tokens((5,)) == [6] and phrase.next_tokens((5, 6)) == []
    assert either.next_tokens(()) == [7, 8] and either.next_tokens((8,)) == [9] and either.next_tokens((7,)) == []
    assert satisfies([phrase, either], [1, 5, 6, 3, 8, 9])
    assert not satisfies([phrase, either], [1, 5, 3, 6, 8, 9])
    assert repr(phrase) == "PhrasalConstraint([5, 6])" and either.token_ids == [[7], [8, 9]]
    assert [type(c) for c in call_constraints([phrase], [[1], [[2], [3]]])] == [
        decoding.PhrasalConstraint, decoding.PhrasalConstraint, decoding.DisjunctiveConstraint]


def test_a_token_that_breaks_a_phrase_starts_nothing():
    """As 4.55's tracker: 'a a b' does not meet 'a b' there (the second 'a' abandons the phrase)."""
    phrase = decoding.PhrasalConstraint([5, 6])
    assert not satisfies([phrase], [5, 5, 6])
    assert satisfies([phrase], [5, 5, 3, 5, 6])


def test_the_bank_of_alternatives_that_share_a_prefix_counts_the_tokens_met():
    """Documented difference: 4.55 computes this bank on a copy that shares its list with the original, so
    after '5' the second alternative's candidate '7' gets bank 0; the tokens met say 2 (complete)."""
    either = decoding.DisjunctiveConstraint([[5, 6], [5, 7]])
    progress = ConstraintProgress.read([either], [1, 5])
    assert progress.bank == 1 and progress.next_tokens() == [6, 7]
    for token in (6, 7):
        advanced = progress.copy()
        advanced.add(token)
        assert advanced.completed and advanced.bank == 2
    assert progress.bank == 1 and progress.matched == (5,)          # the original is left as it was


def is_contiguous_in(phrase, row):
    return any(row[i:i + len(phrase)] == list(phrase) for i in range(len(row)))


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 2), seed=st.integers(0, 10_000), num_beams=st.integers(2, 4),
       nrs=st.integers(1, 2), steps=st.integers(2, 8), picks=st.lists(st.integers(0, 30), min_size=1, max_size=3),
       disjunctive=st.booleans())
def test_every_returned_sequence_meets_its_constraints(arch, batch, seed, num_beams, nrs, steps, picks, disjunctive):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    plain = decoding.generate(model, ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=steps,
                              eos_token_id=None, pad_token_id=PAD)
    likely = plain[:, ids.shape[1]:].reshape(-1).tolist()
    phrase = [likely[p % len(likely)] + (p % 3) for p in picks]            # near what the model writes
    words = [[[token] for token in dict.fromkeys(phrase)]] if disjunctive else [phrase]
    try:
        out = decoding.generate(model, ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=steps,
                                pad_token_id=PAD, num_return_sequences=min(nrs, num_beams), force_words_ids=words)
    except ConstraintsNotMet:
        event("ConstraintsNotMet")
        return
    event("returned")
    constraints = call_constraints(None, words)
    for row in out.tolist():
        assert satisfies(constraints, row)
        options = words[0] if disjunctive else [phrase]
        assert any(is_contiguous_in(option, row) for option in options)


def test_an_impossible_constraint_raises_constraints_not_met(model):
    with pytest.raises(ConstraintsNotMet, match=r"prompt 0.*max_length=6.*raise max_new_tokens or num_beams"):
        decoding.generate(model, IDS, max_new_tokens=3, num_beams=2, force_words_ids=[[20, 21, 22, 23]],
                          pad_token_id=PAD)


def test_a_phrase_met_in_the_prompt_counts_and_the_search_is_beam_search(model):
    """Documented (as 4.55): the whole row is read; with every constraint met by the prompt there is nothing to
    force, and (without eos) the result is beam search's."""
    ids, mask = prompts(2, 4)
    prompt_phrase = [ids[0, -1].item()]
    words = [prompt_phrase, [ids[1, -1].item()]]
    ids_both = torch.cat([ids, ids[:, -1:].flip(0)], dim=1)
    mask_both = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    kwargs = dict(attention_mask=mask_both, num_beams=3, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD,
                  num_return_sequences=2)
    assert torch.equal(decoding.generate(model, ids_both, force_words_ids=words, **kwargs),
                       decoding.generate(model, ids_both, **kwargs))


def test_phrases_and_constraint_objects_are_the_same_request(model):
    ids, mask = prompts(2, 9)
    kwargs = dict(attention_mask=mask, num_beams=3, max_new_tokens=6, pad_token_id=PAD, return_dict_in_generate=True,
                  output_scores=True)
    words = [[40, 41], [[50], [60, 61]]]
    by_ids = decoding.generate(model, ids, force_words_ids=words, **kwargs)
    by_objects = decoding.generate(model, ids, constraints=call_constraints(None, words), **kwargs)
    assert torch.equal(by_ids.sequences, by_objects.sequences)
    assert torch.equal(by_ids.beam_indices, by_objects.beam_indices)
    for row in by_ids.sequences.tolist():
        assert is_contiguous_in([40, 41], row) and (50 in row or is_contiguous_in([60, 61], row))


def test_a_plain_streamer_gets_the_best_sequence(model):
    ids, mask = prompts(2, 2)
    streamer = PlainRecorder()
    out = decoding.generate(model, ids, attention_mask=mask, num_beams=3, max_new_tokens=6, eos_token_id=None,
                            pad_token_id=PAD, force_words_ids=[[30]], streamer=streamer)
    assert torch.equal(streamer.puts[0], ids) and streamer.ends == 1
    assert torch.equal(torch.stack(streamer.puts[1:], dim=1), out[:, ids.shape[1]:])


def test_a_failure_mid_search_keeps_the_running_beams(model):
    class FailsAtStep3:
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return scores

    ids, mask = prompts(2, 1)
    for kwargs in (dict(force_words_ids=[[30]]), dict(num_beam_groups=2, diversity_penalty=1.0)):
        with pytest.raises(decoding.GenerationInterrupted) as info:
            decoding.generate(model, ids, attention_mask=mask, num_beams=4, max_new_tokens=6, pad_token_id=PAD,
                              logits_processor=[FailsAtStep3()], **kwargs)
        assert info.value.partial.shape[0] == 8 and info.value.partial.shape[1] > ids.shape[1]
        assert isinstance(info.value.__cause__, RuntimeError)
