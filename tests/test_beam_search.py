"""Beam search and beam sampling against model.generate, token for token, on tiny models of 9 architectures."""

import math

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

import decoding
from decoding.strategies.beam.tree import path, returned
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same_steps, both

ARCHS = sorted(ARCHITECTURES)
EARLY_STOPPING = [False, True, "never"]


def assert_same_beams(reference, ours):
    """Identical sequences and beam indices; sequences_scores and per-step scores within 1e-5."""
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    assert reference.beam_indices.dtype == ours.beam_indices.dtype
    assert torch.equal(reference.beam_indices, ours.beam_indices), (reference.beam_indices, ours.beam_indices)
    if reference.sequences_scores is None:
        assert ours.sequences_scores is None
    else:
        torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)
    assert (reference.scores is None) == (ours.scores is None)
    if reference.scores is not None:
        assert_same_steps(reference.scores, ours.scores)
    if reference.logits is not None:
        assert_same_steps(reference.logits, ours.logits)


def note_coverage(ours, kwargs):
    """Hypothesis events (shown with --hypothesis-show-statistics): how often eos ends a hypothesis."""
    eos = kwargs["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    event(f"eos in a returned hypothesis: {bool(torch.isin(ours.sequences, torch.tensor(eos)).any())}")
    event(f"stopped before max_new_tokens: {len(ours.scores) < kwargs['max_new_tokens']}")


def emitted_tokens(model, ids, mask, steps, num_beams, row=0):
    """Tokens the beam search emits in its best hypothesis of prompt ``row`` (eos among them is reachable)."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, num_beams=num_beams,
                         eos_token_id=None, pad_token_id=PAD)
    return out[row, ids.shape[1]:].tolist()


def beam_case(arch, batch, seed, num_beams, nrs, steps, eos_pick, multi_eos, **sampling):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    emitted = emitted_tokens(model, ids, mask, steps, num_beams)
    eos = emitted[eos_pick % len(emitted)]
    if multi_eos:  # one eos id from every prompt's best hypothesis, and the model's own (K up to 5 * num_beams)
        others = [emitted_tokens(model, ids, mask, steps, num_beams, row) for row in range(1, batch)]
        eos = sorted({eos, EOS, *(tokens[eos_pick % len(tokens)] for tokens in others)})
    return model, ids, dict(attention_mask=mask, max_new_tokens=steps, num_beams=num_beams,
                            num_return_sequences=min(nrs, num_beams), pad_token_id=PAD,
                            eos_token_id=eos, return_dict_in_generate=True,
                            output_scores=True, **sampling)


@settings(max_examples=240)
@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       num_beams=st.integers(2, 5), nrs=st.integers(1, 5), steps=st.integers(1, 10),
       length_penalty=st.floats(-1.0, 2.0, allow_nan=False), early_stopping=st.sampled_from(EARLY_STOPPING),
       eos_pick=st.integers(0, 9), multi_eos=st.booleans())
def test_beam_search_matches_reference(arch, batch, seed, num_beams, nrs, steps, length_penalty,
                                       early_stopping, eos_pick, multi_eos):
    model, ids, kwargs = beam_case(arch, batch, seed, num_beams, nrs, steps, eos_pick, multi_eos)
    reference, ours = both(model, ids, seed, length_penalty=length_penalty, early_stopping=early_stopping,
                           **kwargs)
    assert_same_beams(reference, ours)
    note_coverage(ours, kwargs)


@settings(max_examples=160)
@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       num_beams=st.integers(2, 5), nrs=st.integers(1, 5), steps=st.integers(1, 10),
       length_penalty=st.floats(-1.0, 2.0, allow_nan=False), early_stopping=st.sampled_from(EARLY_STOPPING),
       eos_pick=st.integers(0, 9), multi_eos=st.booleans(), temperature=st.sampled_from([0.5, 1.0, 1.5]),
       top_k=st.sampled_from([0, 3, 50]), top_p=st.sampled_from([1.0, 0.9, 0.5]))
def test_beam_sampling_matches_reference_under_the_same_seed(arch, batch, seed, num_beams, nrs, steps,
                                                             length_penalty, early_stopping, eos_pick,
                                                             multi_eos, temperature, top_k, top_p):
    model, ids, kwargs = beam_case(arch, batch, seed, num_beams, nrs, steps, eos_pick, multi_eos)
    reference, ours = both(model, ids, seed, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                           length_penalty=length_penalty, early_stopping=early_stopping, **kwargs)
    assert_same_beams(reference, ours)
    note_coverage(ours, kwargs)


@settings(max_examples=60)
@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       num_beams=st.integers(2, 4), length_penalty=st.floats(-1.0, 2.0, allow_nan=False),
       early_stopping=st.sampled_from(EARLY_STOPPING), position=st.integers(0, 2), do_sample=st.booleans())
def test_search_that_stops_early_matches_reference(arch, batch, seed, num_beams, length_penalty, early_stopping,
                                                   position, do_sample):
    """Many eos ids (tokens of every hypothesis an eos-free search returns), so the search often ends early."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    free = model.generate(ids, attention_mask=mask, max_new_tokens=12, num_beams=num_beams,
                          num_return_sequences=num_beams, eos_token_id=None, pad_token_id=PAD)
    eos = sorted(set(free[:, ids.shape[1] + position:ids.shape[1] + 2 * position + 1].flatten().tolist()))
    reference, ours = both(model, ids, seed, attention_mask=mask, max_new_tokens=12, num_beams=num_beams,
                           num_return_sequences=num_beams, eos_token_id=eos, pad_token_id=PAD, do_sample=do_sample,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)
    event(f"stopped before max_new_tokens: {len(ours.scores) < 12}")


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture(arch):
    """A padded batch, 2 eos ids, nrs 2: beam search and beam sampling on each architecture."""
    model, ids, kwargs = beam_case(arch, 3, 7, 3, 2, 8, 2, True)
    for sampling in (dict(), dict(do_sample=True, top_k=20)):
        reference, ours = both(model, ids, 3, output_logits=True, **kwargs, **sampling)
        assert_same_beams(reference, ours)


@pytest.mark.parametrize("early_stopping", EARLY_STOPPING)
@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 1.0, 2.0])
def test_each_early_stopping_value_with_eos_found_early(early_stopping, length_penalty):
    """Eos ids from the 2nd and 3rd tokens of both prompts' best hypotheses: finished hypotheses compete early."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 3)
    eos = sorted({emitted_tokens(model, ids, mask, 12, 4, row)[i] for row in (0, 1) for i in (1, 2)})
    reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=12, num_beams=4,
                           num_return_sequences=4, eos_token_id=eos, pad_token_id=PAD,
                           early_stopping=early_stopping, length_penalty=length_penalty,
                           return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)
    if length_penalty <= 1.0:  # short hypotheses that ended on eos are among the returned ones
        assert torch.isin(ours.sequences[:, ids.shape[1]:], torch.tensor(eos)).any()


def test_early_stopping_values_change_the_result():
    """The finishing rules really differ here (so the test above can tell them apart)."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 3)
    eos = sorted({emitted_tokens(model, ids, mask, 12, 4, row)[i] for row in (0, 1) for i in (1, 2)})
    steps = {}
    for early_stopping in EARLY_STOPPING:
        for length_penalty in (0.0, 2.0):
            out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=12, num_beams=4,
                                    num_return_sequences=4, eos_token_id=eos, pad_token_id=PAD,
                                    length_penalty=length_penalty, early_stopping=early_stopping,
                                    return_dict_in_generate=True, output_scores=True)
            steps[early_stopping, length_penalty] = len(out.scores)
    assert min(steps.values()) < 12 and steps[True, 2.0] < steps["never", 2.0]
    assert steps[False, 0.0] == steps["never", 0.0]  # "never" only differs with a positive length penalty


@pytest.mark.parametrize("pad_token_id, eos_token_id", [(PAD, EOS), (7, EOS), (None, EOS), (PAD, None), (7, None)])
def test_fill_value_rules_and_max_length(pad_token_id, eos_token_id):
    """What follows a short hypothesis (pad, eos[0] when pad is 0 or None, -1 without eos); max_length."""
    model = tiny_model("gpt2")
    ids, mask = prompts(2, 5)
    kwargs = dict(attention_mask=mask, max_length=ids.shape[1] + 9, num_beams=3, num_return_sequences=3,
                  pad_token_id=pad_token_id, return_dict_in_generate=True, output_scores=True)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = [emitted_tokens(model, ids, mask, 9, 3)[3], eos_token_id]
    else:
        kwargs["eos_token_id"] = None
    reference, ours = both(model, ids, 0, **kwargs)
    assert_same_beams(reference, ours)
    assert ours.sequences.shape[1] <= ids.shape[1] + 9


def test_plain_tensor_output_and_no_sequences_scores_without_output_scores():
    model = tiny_model("qwen2")
    ids, mask = prompts(3, 2)
    kwargs = dict(attention_mask=mask, max_new_tokens=7, num_beams=3, pad_token_id=PAD)
    assert torch.equal(model.generate(ids, **kwargs), decoding.generate(model, ids, **kwargs))
    reference, ours = both(model, ids, 0, return_dict_in_generate=True, **kwargs)
    assert ours.sequences_scores is None and ours.scores is None
    assert_same_beams(reference, ours)


def test_use_cache_false():
    model = tiny_model("mistral")
    ids, mask = prompts(2, 3)
    reference, ours = both(model, ids, 2, attention_mask=mask, max_new_tokens=6, num_beams=3, use_cache=False,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)


@pytest.mark.parametrize("do_sample", [False, True])
def test_user_processors_from_transformers(do_sample):
    """The reference's repetition penalty and no-repeat-ngram run on log-probs of the beam rows."""
    model = tiny_model("llama")
    ids, mask = prompts(3, 9)
    processors = [RepetitionPenaltyLogitsProcessor(1.3), NoRepeatNGramLogitsProcessor(2)]
    reference, ours = both(model, ids, 1, attention_mask=mask, max_new_tokens=12, num_beams=4,
                           num_return_sequences=2, logits_processor=processors, do_sample=do_sample,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)


@pytest.mark.parametrize("arch, do_sample, knobs", [
    ("llama", False, dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3,
                          bad_words_ids=[[8], [9, 10]], sequence_bias={(5,): 1.0}, suppress_tokens=[12])),
    ("gpt2", False, dict(encoder_repetition_penalty=1.2, exponential_decay_length_penalty=(2, 1.1),
                         forced_eos_token_id=EOS, renormalize_logits=True)),
    ("qwen2", True, dict(temperature=0.8, min_p=0.05, typical_p=0.9, repetition_penalty=1.2)),
    ("gpt_neox", True, dict(top_k=20, epsilon_cutoff=0.001, eta_cutoff=0.001, begin_suppress_tokens=[14])),
])
def test_reference_processors_by_keyword_with_beams(arch, do_sample, knobs):
    """Every processor built from its keyword runs on the beam rows as the reference runs it
    (log-probs first; warpers keep at least ``n_eos + 1`` tokens with beam sampling)."""
    model = tiny_model(arch)
    ids, mask = prompts(2, 4)
    reference, ours = both(model, ids, 3, attention_mask=mask, max_new_tokens=10, num_beams=3,
                           num_return_sequences=2, do_sample=do_sample, eos_token_id=[EOS, 7], pad_token_id=PAD,
                           return_dict_in_generate=True, output_scores=True, **knobs)
    assert_same_beams(reference, ours)


class PenaliseGenerated(decoding.LogitsProcessor):
    """Stateful: remembers each row's generated tokens via the lifecycle and subtracts 1.5 from them."""

    def __init__(self):
        self.seen = None

    def reset(self):
        self.seen = None

    def reorder(self, beam_rows):
        self.seen = self.seen.index_select(0, beam_rows.long())

    def accept(self, token_ids):
        self.seen = self.seen.scatter(1, token_ids[:, None], True)

    def __call__(self, input_ids, scores):
        if self.seen is None:
            self.seen = torch.zeros_like(scores, dtype=torch.bool)
        return scores - 1.5 * self.seen


class PenaliseGeneratedFromIds:
    """The same rule, stateless: reads the generated tokens from input_ids (for the reference)."""

    def __init__(self, prompt_length):
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, input_ids[:, self.prompt_length:], True)
        return scores - 1.5 * seen


def test_stateful_processor_follows_the_beams():
    """reorder(beam_rows) then accept(tokens) after every step keeps per-row state on the right beams."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 4)
    kwargs = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, pad_token_id=PAD,
                  return_dict_in_generate=True, output_scores=True)
    reference = model.generate(ids, logits_processor=[PenaliseGeneratedFromIds(ids.shape[1])], **kwargs)
    ours = decoding.generate(model, ids, logits_processor=[PenaliseGenerated()], **kwargs)
    assert_same_beams(reference, ours)
    plain = decoding.generate(model, ids, **kwargs)
    assert not torch.equal(plain.sequences, ours.sequences)  # the processor matters here


class StopAfterToken(decoding.StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores=None, **kwargs):
        return input_ids[:, -1] == self.token


def test_user_stopping_criterion_finishes_hypotheses():
    from transformers import StoppingCriteria, StoppingCriteriaList

    class HFStopAfterToken(StoppingCriteria):
        def __init__(self, token):
            self.token = token

        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == self.token

    model = tiny_model("phi3")
    ids, mask = prompts(2, 6)
    token = emitted_tokens(model, ids, mask, 10, 3)[2]
    kwargs = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, eos_token_id=None, pad_token_id=PAD,
                  return_dict_in_generate=True, output_scores=True)
    reference = model.generate(ids, stopping_criteria=StoppingCriteriaList([HFStopAfterToken(token)]), **kwargs)
    ours = decoding.generate(model, ids, stopping_criteria=[StopAfterToken(token)], **kwargs)
    assert_same_beams(reference, ours)


@pytest.mark.parametrize("do_sample", [False, True])
def test_transition_scores_match_the_reference(do_sample):
    """compute_transition_scores equals the reference's, and for beams sums to sequences_scores."""
    model = tiny_model("gemma")
    ids, mask = prompts(3, 12)
    eos = emitted_tokens(model, ids, mask, 9, 4)[2]
    common = dict(attention_mask=mask, max_new_tokens=9, eos_token_id=eos, pad_token_id=PAD, do_sample=do_sample,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    length_penalty = 0.7
    reference, ours = both(model, ids, 5, num_beams=4, num_return_sequences=3, length_penalty=length_penalty,
                           **common)
    assert_same_beams(reference, ours)
    expected = model.compute_transition_scores(reference.sequences, reference.scores, reference.beam_indices)
    got = decoding.compute_transition_scores(ours.sequences, ours.scores, ours.beam_indices)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    lengths = (ours.beam_indices >= 0).sum(-1).to(torch.float32)
    torch.testing.assert_close(got.sum(-1) / lengths ** length_penalty, ours.sequences_scores, atol=1e-4, rtol=0)
    # greedy / sampling outputs (no beam indices), and normalize_logits on raw logits
    reference, ours = both(model, ids, 5, num_return_sequences=2 if do_sample else 1, **common)
    for normalize in (False, True):
        for field in ("scores", "logits"):
            expected = model.compute_transition_scores(reference.sequences, getattr(reference, field),
                                                       normalize_logits=normalize)
            got = decoding.compute_transition_scores(ours.sequences, getattr(ours, field), normalize_logits=normalize)
            assert torch.equal(torch.isinf(got), torch.isinf(expected))
            finite = torch.isfinite(expected)
            torch.testing.assert_close(got[finite], expected[finite], atol=1e-5, rtol=0)


def test_transition_scores_refuses_empty_scores():
    with pytest.raises(ValueError, match="scores"):
        decoding.compute_transition_scores(torch.zeros((1, 3), dtype=torch.long), ())


@pytest.mark.parametrize("do_sample", [False, True])
def test_beam_tree_paths_and_scores(do_sample):
    """Returned sequences are paths in the tree; each node's log_prob is its parent's plus its step score."""
    model = tiny_model("opt")
    ids, mask = prompts(2, 13)
    eos = emitted_tokens(model, ids, mask, 1, 1)[0]  # prompt 0's most likely first token: its best candidate ends
    length_penalty, nrs = 1.3, 2
    torch.manual_seed(0)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=9, num_beams=3, num_return_sequences=nrs,
                            eos_token_id=eos, pad_token_id=PAD, length_penalty=length_penalty, do_sample=do_sample,
                            return_dict_in_generate=True, output_scores=True, output_beam_tree=True)
    torch.manual_seed(0)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=9, num_beams=3,
                              num_return_sequences=nrs, eos_token_id=eos, pad_token_id=PAD,
                              length_penalty=length_penalty, do_sample=do_sample, return_dict_in_generate=True,
                              output_scores=True)
    assert torch.equal(out.sequences, plain.sequences)  # recording changes nothing
    nodes = out.trace["beam_tree"]
    assert [n["id"] for n in nodes] == list(range(len(nodes)))
    for node in nodes:
        assert node["status"] in ("prompt", "running", "finished", "pruned") and node["reason"]
        if node["parent"] is None:
            continue
        parent = nodes[node["parent"]]
        assert parent["step"] == node["step"] - 1 and parent["prompt"] == node["prompt"]
        step_score = float(out.scores[node["step"]][node["beam_index"], node["token"]])
        assert math.isclose(node["log_prob"], parent["log_prob"] + step_score, abs_tol=1e-4)
        assert math.isclose(node["score"], node["log_prob"] / (node["step"] + 1) ** length_penalty, abs_tol=1e-4)
    ranked = returned(nodes)
    assert len(ranked) == out.sequences.shape[0]
    prompt_length = ids.shape[1]
    for row, node in enumerate(ranked):
        assert node["status"] == "finished" and node["rank"] == row % nrs and node["prompt"] == row // nrs
        tokens = path(nodes, node["id"])
        assert out.sequences[row, prompt_length:prompt_length + len(tokens)].tolist() == tokens
        assert math.isclose(node["score"], float(out.sequences_scores[row]), abs_tol=1e-5)
    reasons = {n["reason"] for n in nodes}
    assert "eos" in reasons and "outranked" in reasons
    steps = len(out.scores)
    for b in range(ids.shape[0]):
        mine = [n for n in nodes if n["prompt"] == b and n["parent"] is not None]
        assert len(mine) == steps * 3 * 2  # K = 2 * num_beams candidates per step (one eos id)
        assert len([n for n in mine if n["status"] == "finished"]) <= 3  # what is left of the finished set
        last = [n for n in mine if n["step"] == steps - 1 and n["reason"] == "running when the search stopped"]
        assert len(last) <= 3


def test_interrupted_beam_search_keeps_the_running_beams():
    class Boom:
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            if self.calls == 4:
                raise RuntimeError("boom")
            return scores

    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    with pytest.raises(decoding.GenerationInterrupted) as caught:
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=8, num_beams=3, pad_token_id=PAD,
                          logits_processor=[Boom()])
    assert caught.value.partial.shape == (6, ids.shape[1] + 3)
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_beams=3, length_penalty=float("nan")), "length_penalty"),
    (dict(num_beams=3, length_penalty="long"), "length_penalty"),
    (dict(num_beams=3, early_stopping="sometimes"), "early_stopping"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=1, output_beam_tree=True, return_dict_in_generate=True), "output_beam_tree"),
    (dict(num_beams=2, output_beam_tree=True), "return_dict_in_generate"),
    (dict(num_beams=2, output_beam_tree=1, return_dict_in_generate=True), "output_beam_tree"),
    (dict(num_beams=2, do_sample=True, seed=3), "seed"),
])
def test_invalid_beam_arguments_raise_before_any_forward(kwargs, match):
    class NoForward(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = model
            self.config, self.generation_config = model.config, model.generation_config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, *args, **kw):
            raise AssertionError("forward ran")

    model = NoForward(tiny_model("llama"))
    with pytest.raises((ValueError, TypeError, NotImplementedError), match=match):
        decoding.generate(model, torch.tensor([[5, 6]]), max_new_tokens=3, **kwargs)


def test_attentions_and_hidden_states_per_step():
    model = tiny_model("gpt2")
    ids, mask = prompts(2, 3)
    reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=5, num_beams=3, pad_token_id=PAD,
                           return_dict_in_generate=True, output_attentions=True, output_hidden_states=True,
                           output_scores=True, output_logits=True)
    assert_same_beams(reference, ours)
    for field in ("attentions", "hidden_states"):
        assert len(getattr(reference, field)) == len(getattr(ours, field))
        for r_step, o_step in zip(getattr(reference, field), getattr(ours, field)):
            assert len(r_step) == len(o_step)
            for r, o in zip(r_step, o_step):
                torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def test_beam_settings_from_a_generation_config():
    from transformers import GenerationConfig
    model = tiny_model("gpt_neox")
    ids, mask = prompts(3, 8)
    config = GenerationConfig(num_beams=3, length_penalty=0.5, early_stopping=True, num_return_sequences=2,
                              max_new_tokens=7, eos_token_id=emitted_tokens(model, ids, mask, 7, 3)[1],
                              pad_token_id=PAD)
    reference, ours = both(model, ids, 0, attention_mask=mask, generation_config=config,
                           return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)
    assert ours.sequences.shape[0] == 6


@pytest.mark.parametrize("do_sample", [False, True])
def test_stop_strings_finish_hypotheses(do_sample):
    """A stop string that prompt 0's best hypothesis produces (a printable token's text) ends hypotheses."""
    from tests.tokenizer import byte_tokenizer
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids, mask = prompts(2, 7)
    emitted = emitted_tokens(model, ids, mask, 10, 3)
    text = next(tok.decode([t]).strip() for t in emitted[1:]
                if tok.decode([t]).strip().isascii() and tok.decode([t]).strip().isprintable()
                and tok.decode([t]).strip())
    reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=10, num_beams=3,
                           stop_strings=[text, "zz"], tokenizer=tok, eos_token_id=None, pad_token_id=PAD,
                           do_sample=do_sample, return_dict_in_generate=True, output_scores=True)
    assert_same_beams(reference, ours)
    assert int((ours.beam_indices >= 0).sum(-1).min()) < 10  # the stop string ended a returned hypothesis
