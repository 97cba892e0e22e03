"""The strategy contract: ``generate(strategy=fn)`` runs a user's loop with everything of a call for free;
``custom_generate=`` callables written for the reference run unchanged; one error path keeps ``.partial``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from decoding.strategies import STRATEGIES, PreparedCall, SequenceState, decode, mode
from decoding.generation import prepare_call
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same, both, emitted


def student_greedy(call):
    """The loop a student writes: argmax until done, nothing else."""
    runner, state = call.new_runner(), call.new_state()
    logits = runner.prefill(call.input_ids)
    while True:
        scores = call.processors(state.sequences, logits)
        state.record(logits, scores)
        tokens = state.append(scores.argmax(dim=-1))
        if state.done:
            return call.finish(state, runner)
        logits = runner.step(tokens)


class Recorder:
    """A plain streamer that keeps what it is given."""

    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value)

    def end(self):
        self.ended = True


def with_chooser(call):
    """The built-in loop with the call's chooser, returning the state (the contract finishes it)."""
    runner, state = call.new_runner(), call.new_state()
    return decode(runner, call.input_ids, call.processors, state, call.chooser(state))


@settings(max_examples=30)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       steps=st.integers(1, 10), eos_pick=st.integers(0, 9))
def test_a_students_greedy_loop_equals_model_generate(arch, batch, seed, steps, eos_pick):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    eos = emitted(model, ids, mask, seed, steps, PAD)[0].tolist()[eos_pick % steps]
    kwargs = dict(attention_mask=mask, max_new_tokens=steps, eos_token_id=eos, pad_token_id=PAD,
                  repetition_penalty=1.2, return_dict_in_generate=True, output_scores=True, output_logits=True)
    reference = model.generate(ids, **kwargs)
    ours = decoding.generate(model, ids, strategy=student_greedy, **kwargs)
    assert_same(reference, ours)


@settings(max_examples=20)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       nrs=st.integers(1, 2), top_k=st.sampled_from([0, 5, 50]))
def test_a_strategy_returning_its_state_samples_as_model_generate(arch, batch, seed, nrs, top_k):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    reference, _ = both(model, ids, seed, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=top_k,
                        num_return_sequences=nrs, pad_token_id=PAD)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, strategy=with_chooser, attention_mask=mask, max_new_tokens=8,
                             do_sample=True, top_k=top_k, num_return_sequences=nrs, pad_token_id=PAD)
    assert torch.equal(reference, ours)


def test_a_strategy_gets_the_streamer_and_per_row_seeds():
    model = tiny_model("llama")
    ids, mask = prompts(2, 5)

    streamer = Recorder()
    ours = decoding.generate(model, ids, strategy=with_chooser, attention_mask=mask, max_new_tokens=6,
                             do_sample=True, seed=[3, 4], streamer=streamer, pad_token_id=PAD)
    builtin = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, do_sample=True, seed=[3, 4],
                                pad_token_id=PAD)
    assert torch.equal(ours, builtin)
    assert streamer.ended and len(streamer.puts) == 1 + 6 and torch.equal(streamer.puts[0], ids)


def test_an_error_after_the_first_tokens_keeps_them_in_partial():
    model = tiny_model("llama")
    ids, mask = prompts(2, 7)

    def fails_at_step_three(call):
        runner, state = call.new_runner(), call.new_state()
        logits = runner.prefill(call.input_ids)
        for _ in range(3):
            tokens = state.append(call.processors(state.sequences, logits).argmax(-1))
            logits = runner.step(tokens)
        raise RuntimeError("out of ideas")

    with pytest.raises(decoding.GenerationInterrupted, match="out of ideas") as caught:
        decoding.generate(model, ids, strategy=fails_at_step_three, attention_mask=mask, max_new_tokens=9,
                          eos_token_id=None, pad_token_id=PAD)
    full = model.generate(ids, attention_mask=mask, max_new_tokens=9, eos_token_id=None, pad_token_id=PAD)
    assert caught.value.partial.shape == (2, ids.shape[1] + 3)
    assert torch.equal(caught.value.partial, full[:, :ids.shape[1] + 3])
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_an_error_before_any_token_is_raised_as_it_is():
    def fails_at_once(call):
        call.new_state()
        raise KeyError("no")

    with pytest.raises(KeyError):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), strategy=fails_at_once, max_new_tokens=3)


def test_a_strategy_must_return_the_output_or_its_state():
    with pytest.raises(TypeError, match="call.finish"):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), strategy=lambda call: 42,
                          max_new_tokens=3)
    with pytest.raises(TypeError, match="strategy"):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), strategy="greedy", max_new_tokens=3)


def test_the_strategy_gets_the_same_checks_as_generate():
    """Bad arguments are refused before the user's loop runs, with generate's messages."""
    ran = []
    with pytest.raises(ValueError, match="top_p"):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), strategy=lambda call: ran.append(1),
                          do_sample=True, top_p=1.5, max_new_tokens=3)
    assert not ran


@pytest.mark.parametrize("kwargs,expected", [
    (dict(), "greedy"), (dict(do_sample=True), "sample"), (dict(num_beams=2), "beam_search"),
    (dict(num_beams=2, do_sample=True), "beam_sample"), (dict(prompt_lookup_num_tokens=2), "speculative"),
    (dict(penalty_alpha=0.6, top_k=4), "contrastive"), (dict(dola_layers="low"), "dola"),
    (dict(dola_layers="low", do_sample=True), "dola"), (dict(penalty_alpha=0.6, top_k=1), "greedy"),
])
def test_the_dispatch_table_picks_the_family(kwargs, expected):
    call = prepare_call(tiny_model("llama"), torch.tensor([[1, 5, 6]]), max_new_tokens=3, **kwargs)
    assert isinstance(call, PreparedCall)
    assert mode(call) == expected and expected in STRATEGIES


# ------------------------------------------------------------------------------------ custom_generate=

def reference_style_greedy(model, input_ids, logits_processor, stopping_criteria, generation_config, bonus=0.0,
                           **model_kwargs):
    """A decoding method written for ``model.generate(custom_generate=...)``: no cache, plain forwards,
    the reference's private pad tensor, and a keyword of its own (``bonus`` added to token 7's logit)."""
    pad, attention_mask = generation_config._pad_token_tensor, model_kwargs.get("attention_mask")
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool)
    while True:
        mask = torch.ones_like(input_ids) if attention_mask is None else torch.cat(
            [attention_mask, attention_mask.new_ones(input_ids.shape[0], input_ids.shape[1] - attention_mask.shape[1])], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        logits[:, 7] += bonus
        tokens = logits_processor(input_ids, logits).argmax(-1)
        tokens = torch.where(unfinished, tokens, pad)
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=1)
        unfinished &= ~stopping_criteria(input_ids, None)
        if not unfinished.any():
            return input_ids


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_custom_generate_callable_runs_as_in_the_reference(arch):
    model = tiny_model(arch)
    ids, mask = prompts(3, 11)
    kwargs = dict(attention_mask=mask, max_new_tokens=7, eos_token_id=EOS, pad_token_id=PAD, no_repeat_ngram_size=2,
                  custom_generate=reference_style_greedy, bonus=100.0)
    reference = model.generate(ids, **kwargs)
    ours = decoding.generate(model, ids, **kwargs)
    assert torch.equal(reference, ours)
    assert not torch.equal(ours, decoding.generate(model, ids, **dict(kwargs, bonus=0.0)))


def test_strategy_and_custom_generate_together_are_refused():
    with pytest.raises(ValueError, match="one of them"):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), strategy=student_greedy,
                          custom_generate=reference_style_greedy)


def test_custom_generate_from_a_repository_is_refused_clearly():
    with pytest.raises(NotImplementedError, match="custom_generate"):
        decoding.generate(tiny_model("llama"), torch.tensor([[1, 5, 6]]), custom_generate="someone/some-repo")


def test_pipeline_accepts_every_argument_generate_accepts():
    model = tiny_model("llama")
    ids = torch.tensor([[1, 5, 6]])
    listed = decoding.pipeline(model, ids, num_beams=2, output_beam_tree=True, return_dict_in_generate=True,
                               strategy=student_greedy, streamer=None, max_new_tokens=3, repetition_penalty=1.1)
    assert listed.names() == ["RepetitionPenaltyLogitsProcessor"]
    listed = decoding.pipeline(model, ids, custom_generate=reference_style_greedy, bonus=1.0, max_new_tokens=3)
    assert listed.names() == []


def test_compare_checks_a_strategy_against_the_reference():
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 3)
    result = decoding.compare(model, ids, attention_mask=mask, max_new_tokens=6, strategy=student_greedy,
                              pad_token_id=PAD)
    assert result.identical

    def off_by_one(call):
        out = student_greedy(call)
        out.sequences[0, -1] += 1
        return out

    result = decoding.compare(model, ids, attention_mask=mask, max_new_tokens=6, strategy=off_by_one,
                              pad_token_id=PAD)
    assert not result.identical and result.first_difference == (0, 5)


def test_a_sequence_state_is_a_valid_result_for_the_contract():
    call = prepare_call(tiny_model("llama"), torch.tensor([[1, 5, 6]]), max_new_tokens=2)
    assert isinstance(call.new_state(), SequenceState)


def test_a_strategy_over_other_rows_streams_its_result_at_the_end():
    model = tiny_model("llama")
    ids, mask = prompts(2, 9)

    def branches_then_first(call):
        runner, state = call.new_runner(), call.new_state(call.input_ids.repeat_interleave(2, 0), stream=False)
        logits = runner.prefill(call.input_ids).repeat_interleave(2, 0)
        runner.repeat(2)
        while not state.done:
            tokens = state.append(logits.argmax(-1))
            logits = runner.step(tokens)
        out = call.finish(state, runner)
        call.stream_result(out.sequences[::2])
        return out.__class__(sequences=out.sequences[::2])

    streamer = Recorder()
    out = decoding.generate(model, ids, attention_mask=mask, strategy=branches_then_first, max_new_tokens=4,
                            streamer=streamer, eos_token_id=None, pad_token_id=PAD)
    assert streamer.ended and torch.equal(streamer.puts[0], ids)
    assert torch.equal(torch.stack(streamer.puts[1:], 1), out[:, ids.shape[1]:])
