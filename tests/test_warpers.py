"""Temperature, top-k and top-p against their transformers twins on hypothesis-generated scores, exactly."""

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import decoding


@st.composite
def score_tensors(draw):
    """[rows, vocab] float32 scores with ties, large spreads and some -inf entries."""
    rows = draw(st.integers(1, 4))
    vocab = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    scores = torch.randn(rows, vocab, generator=g) * scale
    if draw(st.booleans()):  # ties: quantise the scores
        scores = (scores * 2).round() / 2
    if draw(st.booleans()):  # some tokens already filtered out
        drop = torch.rand(rows, vocab, generator=g) < 0.3
        drop[:, 0] = False
        scores = scores.masked_fill(drop, -float("inf"))
    ids = torch.randint(0, vocab, (rows, draw(st.integers(1, 6))), generator=g)
    return ids, scores


def same(a, b):
    return torch.equal(torch.isinf(a), torch.isinf(b)) and torch.equal(a[torch.isfinite(a)], b[torch.isfinite(b)])


@given(data=score_tensors(), temperature=st.floats(0.05, 5.0))
def test_temperature(data, temperature):
    ids, scores = data
    ours = decoding.TemperatureLogitsWarper(temperature)(ids, scores)
    assert same(ours, transformers.TemperatureLogitsWarper(temperature)(ids, scores))


@given(data=score_tensors(), top_k=st.integers(1, 50), keep=st.integers(1, 3))
def test_top_k(data, top_k, keep):
    ids, scores = data
    ours = decoding.TopKLogitsWarper(top_k, min_tokens_to_keep=keep)(ids, scores)
    assert same(ours, transformers.TopKLogitsWarper(top_k, min_tokens_to_keep=keep)(ids, scores))


@given(data=score_tensors(), top_p=st.floats(0.0, 1.0), keep=st.integers(1, 3))
def test_top_p(data, top_p, keep):
    ids, scores = data
    ours = decoding.TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(ids, scores)
    assert same(ours, transformers.TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(ids, scores))


def test_processors_do_not_modify_their_input():
    scores = torch.randn(2, 10)
    before = scores.clone()
    for processor in (decoding.TemperatureLogitsWarper(0.5), decoding.TopKLogitsWarper(3),
                      decoding.TopPLogitsWarper(0.5)):
        processor(torch.zeros(2, 1, dtype=torch.long), scores)
    assert torch.equal(scores, before)


def test_temperature_keeps_the_argmax():
    scores = torch.randn(3, 50)
    for t in (0.1, 0.9, 3.0):
        assert torch.equal(decoding.TemperatureLogitsWarper(t)(None, scores).argmax(-1), scores.argmax(-1))


@pytest.mark.parametrize("bad, cls", [(0.0, decoding.TemperatureLogitsWarper), (-1, decoding.TemperatureLogitsWarper),
                                      (0, decoding.TopKLogitsWarper), (2.5, decoding.TopKLogitsWarper),
                                      (1.5, decoding.TopPLogitsWarper), (-0.1, decoding.TopPLogitsWarper)])
def test_constructors_reject_out_of_range(bad, cls):
    with pytest.raises(ValueError, match=cls.name):
        cls(bad)


def test_pipeline_order_and_user_merge():
    settings = decoding.resolve_settings(None, None, dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.9))
    context = decoding.PipelineContext(vocab_size=10, prompt_length=3, eos_token_ids=None)
    user = decoding.TemperatureLogitsWarper(0.5)
    pipeline = decoding.build_pipeline(settings, context, [user])
    # user processors come before the warpers; the built-in temperature still applies after them
    assert pipeline.names() == ["TemperatureLogitsWarper"] * 2 + ["TopKLogitsWarper", "TopPLogitsWarper"]
    assert pipeline[0] is user
    greedy = decoding.build_pipeline(settings.replace(do_sample=False), context)
    assert greedy.names() == []
