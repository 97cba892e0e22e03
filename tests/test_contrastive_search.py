"""Contrastive search under transformers 5 (which no longer runs it): against a slow, plain implementation
written here (a full forward of the whole sequence for each candidate, no cache), plus the argument checks.

Token-for-token checks against transformers 4.55.4's own contrastive search are in
tests/transformers_4_55/test_contrastive_search.py.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import decoding
from tests.models import PAD, prompts, tiny_model

ARCHS = ["llama", "gpt2", "mistral", "gemma2"]
NEAR_TIE = 1e-4


def forward(model, seq, mask):
    """Last-layer hidden states ``[rows, len, hidden]`` and the last position's float32 logits, no cache."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=seq, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    return out.hidden_states[-1], out.logits[:, -1].float()


def slow_contrastive_search(model, ids, mask, alpha, k, steps):
    """The paper's rule, step by step: returns ``(sequences, margins)``, ``margins[t]`` being each row's gap
    between its two best contrastive scores at step ``t`` (where float rounding could decide)."""
    seq, mask, margins = ids, mask, []
    for _ in range(steps):
        context, logits = forward(model, seq, mask)
        top_probs, top_ids = torch.softmax(logits, dim=-1).topk(k, dim=-1)
        scores = []
        for i in range(k):
            with_candidate = torch.cat([seq, top_ids[:, i:i + 1]], dim=1)
            hidden, _ = forward(model, with_candidate, torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1))
            cosine = F.cosine_similarity(context, hidden[:, -1:], dim=-1).masked_fill(mask == 0, -float("inf"))
            scores.append((1 - alpha) * top_probs[:, i] - alpha * cosine.max(dim=-1).values)
        scores = torch.stack(scores, dim=1)
        best_two = scores.topk(2, dim=-1).values
        margins.append(best_two[:, 0] - best_two[:, 1])
        seq = torch.cat([seq, top_ids.gather(1, scores.argmax(dim=-1, keepdim=True))], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return seq, torch.stack(margins, dim=1)


def assert_same_until_a_near_tie(ours, slow, margins, prompt_length):
    """Equal tokens in every row, up to the first step whose two best scores are within ``NEAR_TIE``."""
    for row in range(ours.shape[0]):
        ties = (margins[row] < NEAR_TIE).nonzero()
        until = prompt_length + (int(ties[0]) + 1 if len(ties) else margins.shape[1])
        assert torch.equal(ours[row, :until], slow[row, :until]), (row, ours[row], slow[row])


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       alpha=st.sampled_from([0.2, 0.6, 1.0]), k=st.integers(2, 5), steps=st.integers(1, 6),
       low_memory=st.booleans())
def test_matches_the_slow_implementation(arch, batch, seed, alpha, k, steps, low_memory):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    ours = decoding.generate(model, ids, attention_mask=mask, penalty_alpha=alpha, top_k=k, max_new_tokens=steps,
                             low_memory=low_memory, eos_token_id=None, pad_token_id=PAD)
    slow, margins = slow_contrastive_search(model, ids, mask, alpha, k, steps)
    assert_same_until_a_near_tie(ours, slow, margins, ids.shape[1])


def test_low_memory_gives_the_same_tokens_and_outputs():
    model = tiny_model("mistral")                        # sliding-window layers: cropping them must work too
    ids, mask = prompts(3, 9, min_len=6, max_len=12)
    kwargs = dict(attention_mask=mask, penalty_alpha=0.6, top_k=4, max_new_tokens=14, eos_token_id=None,
                  return_dict_in_generate=True, output_scores=True, output_logits=True, output_hidden_states=True)
    batched = decoding.generate(model, ids, **kwargs)
    sequential = decoding.generate(model, ids, low_memory=True, **kwargs)
    assert torch.equal(batched.sequences, sequential.sequences)
    for name in ("scores", "logits"):
        for a, b in zip(getattr(batched, name), getattr(sequential, name), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for a, b in zip(batched.hidden_states[1:], sequential.hidden_states[1:], strict=True):
        torch.testing.assert_close(torch.stack(a), torch.stack(b), atol=1e-5, rtol=0)
    assert batched.past_key_values.get_seq_length() == sequential.past_key_values.get_seq_length() == \
        batched.sequences.shape[1] - 1


def test_outputs_and_streaming():
    model = tiny_model("llama")
    ids, mask = prompts(2, 3)
    puts = []

    class Recorder:
        def put(self, value):
            puts.append(value.clone())

        def end(self):
            puts.append(None)

    out = decoding.generate(model, ids, attention_mask=mask, penalty_alpha=0.5, top_k=3, max_new_tokens=5,
                            eos_token_id=None, streamer=Recorder(), return_dict_in_generate=True, output_scores=True,
                            output_logits=True, output_hidden_states=True)
    assert len(out.scores) == len(out.logits) == len(out.hidden_states) == 5
    assert out.hidden_states[0][-1].shape == (2, ids.shape[1], 64)      # the prompt's, then one position a step
    assert out.hidden_states[1][-1].shape == (2, 1, 64)
    assert torch.equal(puts[0], ids) and puts[-1] is None
    assert torch.equal(torch.stack(puts[1:-1], dim=1), out.sequences[:, ids.shape[1]:])
    chosen = out.sequences[:, ids.shape[1]:]
    for step, scores in enumerate(out.scores):                           # always one of the top_k candidates
        assert (scores.topk(3, dim=-1).indices == chosen[:, step:step + 1]).any(dim=-1).all()


def test_it_avoids_the_repetition_greedy_falls_into():
    model = tiny_model("gemma2")
    ids, mask = prompts(1, 0)
    greedy = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None)
    contrastive = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None,
                                    penalty_alpha=0.6, top_k=5)
    assert len(set(contrastive[0, -30:].tolist())) > len(set(greedy[0, -30:].tolist()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(penalty_alpha=1.5, top_k=4), r"`penalty_alpha` must be a number in \[0, 1\].*but is 1\.5"),
    (dict(penalty_alpha=-0.1, top_k=4), r"`penalty_alpha` must be a number in \[0, 1\]"),
    (dict(penalty_alpha=0.6, top_k=4, do_sample=True), r"contrastive search.*do_sample=True"),
    (dict(penalty_alpha=0.6, top_k=4, num_beams=2), r"contrastive search.*num_beams=2"),
    (dict(penalty_alpha=0.6, top_k=4, use_cache=False), r"contrastive search.*use_cache=False"),
    (dict(penalty_alpha=0.6, top_k=4, dola_layers="low"), r"contrastive search.*dola_layers"),
    (dict(low_memory=True), r"`low_memory=True` only changes contrastive search"),
    (dict(penalty_alpha=0.6, top_k=4, low_memory="yes"), r"`low_memory` has to be True or False, but is 'yes'"),
])
def test_arguments_are_checked_before_the_first_forward(kwargs, message):
    model = tiny_model("llama")
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            decoding.generate(model, torch.tensor([[5, 6, 7]]), max_new_tokens=3, **kwargs)
    finally:
        hook.remove()
    assert calls == []


def test_low_memory_in_the_models_generation_config_is_ignored_outside_contrastive_search():
    model = copy.deepcopy(tiny_model("llama"))
    ids = torch.tensor([[5, 6, 7]])
    plain = decoding.generate(model, ids, max_new_tokens=4)
    model.generation_config.low_memory = True          # a checkpoint may carry it
    assert torch.equal(decoding.generate(model, ids, max_new_tokens=4), plain)
    contrastive = dict(max_new_tokens=4, penalty_alpha=0.6, top_k=3)
    assert torch.equal(decoding.generate(model, ids, **contrastive),
                       decoding.generate(model, ids, low_memory=False, **contrastive))


def test_top_k_one_or_alpha_zero_is_greedy_as_in_the_reference():
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 1)
    greedy = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6)
    for kwargs in (dict(penalty_alpha=0.6, top_k=1), dict(penalty_alpha=0.0, top_k=4)):
        assert torch.equal(decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, **kwargs), greedy)


def test_more_candidates_than_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"top_k=600 candidates, but the vocabulary has 512 tokens"):
        decoding.generate(tiny_model("llama"), torch.tensor([[5, 6]]), max_new_tokens=2, penalty_alpha=0.6, top_k=600)


def test_a_static_or_filled_cache_is_refused():
    model, ids = tiny_model("llama"), torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="contrastive search cannot run on a static cache"):
        decoding.generate(model, ids, max_new_tokens=2, penalty_alpha=0.6, top_k=4, cache_implementation="static")
    cache = decoding.generate(model, ids, max_new_tokens=2, return_dict_in_generate=True).past_key_values
    with pytest.raises(NotImplementedError, match="whole context.*without past_key_values"):
        decoding.generate(model, torch.tensor([[5, 6, 7, 8, 9]]), max_new_tokens=2, penalty_alpha=0.6, top_k=4,
                          past_key_values=cache)


def test_an_assistant_model_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="contrastive search.*assistant_model"):
        decoding.generate(model, torch.tensor([[5, 6]]), max_new_tokens=2, penalty_alpha=0.6, top_k=4,
                          assistant_model=tiny_model("llama", seed=1))


def test_a_huge_max_new_tokens_with_an_early_eos_costs_nothing():
    model = tiny_model("llama")
    ids, mask = prompts(2, 5)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None, penalty_alpha=0.6, top_k=4)
    kwargs = dict(attention_mask=mask, eos_token_id=plain[:, -2].unique().tolist(), pad_token_id=PAD, penalty_alpha=0.6, top_k=4)
    short = decoding.generate(model, ids, max_new_tokens=20, **kwargs)
    assert short.shape[1] < ids.shape[1] + 20
    assert torch.equal(decoding.generate(model, ids, max_new_tokens=10**8, **kwargs), short)
