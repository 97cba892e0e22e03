"""``decoding.score``: teacher-forced scores equal what ``compute_transition_scores`` gives on generated output."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding.insight.scoring import scoring_pipeline
from decoding.processors.orders import processor_name
from decoding.scores import compute_transition_scores
from tests.models import ARCHITECTURES, PAD, VOCAB, prompts, tiny_model
from tests.reference import emitted

ARCHS = sorted(ARCHITECTURES)

searches = st.sampled_from([
    dict(),
    dict(do_sample=True),
    dict(num_beams=3),
    dict(num_beams=3, do_sample=True),
])
settings_ = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.5, 1.0, 1.5]),
    "top_k": st.sampled_from([0, 5, 50]),
    "top_p": st.sampled_from([0.7, 1.0]),
    "repetition_penalty": st.sampled_from([1.0, 1.3]),
})


def assert_close_with_inf(got, expected):
    """Same ``-inf`` places; the finite values within 2e-5 (one forward against one forward per step)."""
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected)), (got, expected)
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], atol=2e-5, rtol=1e-5)


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000), search=searches,
       params=settings_, steps=st.integers(1, 10), eos_pick=st.integers(0, 9), nrs=st.integers(1, 2))
def test_score_equals_compute_transition_scores_on_generated_output(arch, batch, seed, search, params, steps,
                                                                    eos_pick, nrs):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    kwargs = dict(search, repetition_penalty=params["repetition_penalty"])
    if kwargs.get("do_sample"):
        kwargs.update(temperature=params["temperature"], top_k=params["top_k"], top_p=params["top_p"])
    elif kwargs.get("num_beams", 1) == 1:
        nrs = 1
    eos = emitted(model, ids, mask, seed, steps, PAD)[0].tolist()[eos_pick % steps]   # some rows end early
    torch.manual_seed(seed)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos, pad_token_id=PAD,
                         num_return_sequences=nrs, return_dict_in_generate=True, output_scores=True,
                         output_logits=True, **kwargs)
    rows = out.sequences.shape[0]
    scored = decoding.score(model, out.sequences, ids.shape[1], attention_mask=mask.repeat_interleave(rows // batch, 0),
                            eos_token_id=eos, pad_token_id=PAD, **kwargs)

    beam_indices = getattr(out, "beam_indices", None)
    expected = compute_transition_scores(out.sequences, out.scores, beam_indices)        # [rows, g]
    g = expected.shape[1]
    assert scored.tokens.shape == (rows, out.sequences.shape[1] - ids.shape[1])
    if beam_indices is None:
        assert_close_with_inf(scored.scores, expected)
        assert torch.all(scored.mask[:, :1])
        assert_close_with_inf(scored.logprobs, compute_transition_scores(out.sequences, out.scores,
                                                                         normalize_logits=True))
        assert_close_with_inf(scored.raw_logprobs, compute_transition_scores(out.sequences, out.logits,
                                                                             normalize_logits=True))
        if not kwargs.get("do_sample"):
            assert torch.all(scored.ranks[scored.mask] == 0)    # greedy took the argmax (before a row's padding)
    else:
        ended = beam_indices[:, :g] < 0
        assert torch.equal(~scored.mask[:, :g], ended)   # a hypothesis ends right after its eos
        assert_close_with_inf(scored.scores[:, :g].masked_fill(ended, 0.0), expected)
        raw = compute_transition_scores(out.sequences, out.logits, beam_indices, normalize_logits=True)
        torch.testing.assert_close(scored.raw_logprobs[:, :g].masked_fill(ended, 0.0), raw, atol=2e-5, rtol=1e-5)
    assert torch.all((scored.ranks < scored.alive)[scored.mask])  # every chosen token survived the pipeline


def test_the_sequence_score_of_beam_search_is_the_sum_over_the_length_penalty():
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 5)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=7, num_beams=4, num_return_sequences=2,
                         length_penalty=1.5, pad_token_id=PAD, eos_token_id=7, return_dict_in_generate=True,
                         output_scores=True)
    scored = decoding.score(model, out.sequences, ids.shape[1], attention_mask=mask.repeat_interleave(2, 0),
                            num_beams=4, pad_token_id=PAD, eos_token_id=7)
    lengths = scored.mask.sum(-1)
    torch.testing.assert_close(scored.total() / lengths ** 1.5, out.sequences_scores, atol=1e-4, rtol=1e-5)


def test_any_text_scores_as_a_plain_forward_and_left_padding_changes_nothing():
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(3)
    short, long_ = torch.randint(3, VOCAB, (1, 5), generator=g), torch.randint(3, VOCAB, (1, 8), generator=g)
    continuation = torch.randint(3, VOCAB, (2, 6), generator=g)
    batch = torch.cat([torch.cat([torch.full((1, 3), PAD), short], 1), long_], 0)
    mask = (batch != PAD).long()
    sequences = torch.cat([batch, continuation], 1)
    scored = decoding.score(model, sequences, 8, attention_mask=mask, pad_token_id=PAD, eos_token_id=None)
    for row, prompt in enumerate([short, long_]):
        alone = torch.cat([prompt, continuation[row:row + 1]], 1)
        with torch.no_grad():
            logits = model(alone).logits[0, prompt.shape[1] - 1:-1].float()                # [6, vocab]
        logp = torch.log_softmax(logits, -1)
        expected = logp.gather(-1, continuation[row][:, None])[:, 0]
        torch.testing.assert_close(scored.raw_logprobs[row], expected, atol=2e-5, rtol=1e-5)
        ranks = (logp > expected[:, None]).sum(-1)
        assert torch.equal(scored.raw_ranks[row], ranks)
    # no processors apply: processed equals raw, every token is alive
    torch.testing.assert_close(scored.logprobs, scored.raw_logprobs)
    assert torch.all(scored.alive == VOCAB) and torch.all(scored.mask)
    torch.testing.assert_close(scored.total(), scored.raw_logprobs.sum(-1))


def test_a_filtered_token_scores_minus_inf_and_ranks_behind_the_survivors():
    model = tiny_model("gpt2")
    ids, _ = prompts(1, 2)
    with torch.no_grad():
        worst = model(ids).logits[0, -1].argmin()
    sequences = torch.cat([ids, worst.view(1, 1)], 1)
    scored = decoding.score(model, sequences, ids.shape[1], do_sample=True, top_k=5)
    assert scored.scores[0, 0] == -torch.inf and scored.logprobs[0, 0] == -torch.inf
    assert scored.alive[0, 0] == 5 and scored.ranks[0, 0] == 5 and scored.raw_ranks[0, 0] == VOCAB - 1
    assert torch.isfinite(scored.raw_logprobs).all()


@pytest.mark.parametrize("kwargs", [dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05),
                                    dict(num_beams=2, repetition_penalty=1.2, no_repeat_ngram_size=2, min_length=4),
                                    dict(do_sample=True, top_k=9, order="llama.cpp")])
def test_score_uses_the_pipeline_generate_builds(kwargs):
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    sequences = torch.cat([ids, ids[:, :3]], 1)
    full = torch.cat([mask, torch.ones_like(ids[:, :3])], 1)
    ours = scoring_pipeline(model, sequences, ids.shape[1], full, decoding.config.resolve_settings(
        model, None, {k: v for k, v in kwargs.items() if k != "order"}), order=kwargs.get("order"))
    theirs = decoding.pipeline(model, ids, attention_mask=mask, **kwargs)
    assert [processor_name(p) for p in ours] == [processor_name(p) for p in theirs]


def test_bad_arguments_are_clear_errors():
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    with pytest.raises(ValueError, match="prompt_length"):
        decoding.score(model, ids, ids.shape[1])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        decoding.score(model, ids, 2, attention_mask=mask[:, :1])
    with pytest.raises(ValueError, match=r"\[rows, length\]"):
        decoding.score(model, ids[0], 2)
    with pytest.raises(decoding.UnknownArgumentError, match="temprature"):
        decoding.score(model, ids, 2, temprature=0.5)
