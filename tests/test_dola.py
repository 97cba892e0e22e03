"""DoLa under transformers 5 (which no longer runs it): against a slow, plain implementation written here
(a full forward of the whole sequence each step, no cache, one row at a time), plus the argument checks.

Token-for-token checks against transformers 4.55.4's own DoLa are in tests/transformers_4_55/test_dola.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import decoding
from tests.models import PAD, prompts, tiny_model

ARCHS = ["llama", "gpt2", "opt", "gemma2"]
NEAR_TIE = 1e-4


def js_divergence(p_log, q_log):
    """Jensen-Shannon divergence of two log-distributions ``[vocab]``, averaged over the vocabulary as DoLa does."""
    middle = 0.5 * (p_log.exp() + q_log.exp())
    return 0.5 * ((middle * (middle.log() - p_log)).mean() + (middle * (middle.log() - q_log)).mean())


def slow_dola_row(model, ids, layers, steps, penalty):
    """The paper's rule for one unpadded row ``[1, len]``: returns ``(sequence, margins)`` (the gap between the
    two best scores each step)."""
    seq, margins = ids, []
    head = model.get_output_embeddings()
    for _ in range(steps):
        with torch.no_grad():
            out = model(input_ids=seq, output_hidden_states=True)
            final = out.logits[0, -1].float().log_softmax(-1)
            premature = {j: head(out.hidden_states[j][0, -1]).float().log_softmax(-1) for j in layers}
        chosen = max(layers, key=lambda j: float(js_divergence(final, premature[j])))
        plausible = final >= final.max() + math.log(0.1)
        scores = torch.where(plausible, final - premature[chosen], torch.tensor(-float("inf")))
        seen = seq[0].unique()
        scores[seen] = torch.where(scores[seen] < 0, scores[seen] * penalty, scores[seen] / penalty)
        best_two = scores.topk(2).values
        margins.append(float(best_two[0] - best_two[1]))
        seq = torch.cat([seq, scores.argmax().view(1, 1)], dim=1)
    return seq, margins


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       layers=st.sampled_from([[0], [1], [0, 1], "low", "high"]), penalty=st.sampled_from([1.0, 1.2]),
       steps=st.integers(1, 6))
def test_matches_the_slow_implementation_row_by_row(arch, batch, seed, layers, penalty, steps):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    ours = decoding.generate(model, ids, attention_mask=mask, dola_layers=layers, repetition_penalty=penalty,
                             max_new_tokens=steps, eos_token_id=None, pad_token_id=PAD)
    candidates = {"low": [0], "high": [1]}.get(layers, layers) if isinstance(layers, str) else layers
    for row in range(batch):
        real = ids[row:row + 1, mask[row].bool()]
        slow, margins = slow_dola_row(model, real, candidates, steps, penalty)
        until = next((t + 1 for t, m in enumerate(margins) if m < NEAR_TIE), steps)
        new_ours, new_slow = ours[row, ids.shape[1]:], slow[0, real.shape[1]:]
        assert new_ours[:until].tolist() == new_slow[:until].tolist()


def test_each_row_gets_its_own_premature_layer():
    """A row's tokens do not depend on its batch: DoLa alone on each row gives the batch's rows."""
    model = tiny_model("gemma2")
    ids, mask = prompts(3, 2)
    batch = decoding.generate(model, ids, attention_mask=mask, dola_layers=[0, 1], max_new_tokens=8)
    for row in range(3):
        real = ids[row:row + 1, mask[row].bool()]
        alone = decoding.generate(model, real, dola_layers=[0, 1], max_new_tokens=8)
        assert alone[0, -8:].tolist() == batch[row, -8:].tolist()


def test_sampling_outputs_and_several_sequences_per_prompt():
    model = tiny_model("llama")
    ids, mask = prompts(2, 4)
    out = decoding.generate(model, ids, attention_mask=mask, dola_layers="high", do_sample=True, seed=3,
                            num_return_sequences=3, max_new_tokens=5, eos_token_id=None, return_dict_in_generate=True,
                            output_scores=True, output_logits=True, output_hidden_states=True)
    assert out.sequences.shape == (6, ids.shape[1] + 5)
    assert len(out.scores) == len(out.logits) == len(out.hidden_states) == 5
    chosen = out.sequences[:, ids.shape[1]:]
    for step, scores in enumerate(out.scores):                  # never a token the plausibility constraint removed
        assert torch.isfinite(scores.gather(1, chosen[:, step:step + 1])).all()
        assert (torch.isinf(scores).sum(dim=-1) > 0).all()
    again = decoding.generate(model, ids, attention_mask=mask, dola_layers="high", do_sample=True, seed=3,
                              num_return_sequences=3, max_new_tokens=5, eos_token_id=None)
    assert torch.equal(again, out.sequences)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(dola_layers="middle"), ValueError, r"`dola_layers` must be 'low', 'high' or a non-empty list.*'middle'"),
    (dict(dola_layers=[]), ValueError, r"`dola_layers` must be .*but is \[\]"),
    (dict(dola_layers=[0, -1]), ValueError, r"`dola_layers` must be .*\[0, -1\]"),
    (dict(dola_layers=[0, 5]), ValueError, r"dola_layers=\[0, 5\] names layer\(s\) \[5\].*2-layer model.*0 .*1"),
    (dict(dola_layers="low", num_beams=2), ValueError, r"`dola_layers`.*num_beams=2"),
    (dict(dola_layers="low", penalty_alpha=0.5, top_k=3), ValueError, r"contrastive search.*dola_layers"),
])
def test_arguments_are_checked_before_the_first_forward(kwargs, error, message):
    model = tiny_model("llama")
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(error, match=message):
            decoding.generate(model, torch.tensor([[5, 6, 7]]), max_new_tokens=3, **kwargs)
    finally:
        hook.remove()
    assert calls == []


def test_a_huge_max_new_tokens_with_an_early_eos_costs_nothing():
    model = tiny_model("llama")
    ids, mask = prompts(2, 5)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None, dola_layers="high")
    kwargs = dict(attention_mask=mask, eos_token_id=plain[:, -2].unique().tolist(), pad_token_id=PAD, dola_layers="high")
    short = decoding.generate(model, ids, max_new_tokens=20, **kwargs)
    assert short.shape[1] < ids.shape[1] + 20
    assert torch.equal(decoding.generate(model, ids, max_new_tokens=10**8, **kwargs), short)
