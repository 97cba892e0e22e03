"""Contrastive search against transformers 4.55.4's ``model.generate(penalty_alpha=..., top_k=...)``, token for token.

4.55.4 has two bugs here (docs/contrastive-search.md); where they bite, the reference runs with
:func:`ranking_as_the_paper` in place of its ``_ranking_fast``, so everything else (cache, processors,
stopping, outputs) is still the reference's own loop:

- padded rows: the context's padded positions have zero hidden states in some models, their cosine is
  NaN (0 / 0), the NaN survives the mask and wins the max: every candidate's score is NaN and the
  first (most likely) candidate is taken. The paper leaves padding out of the penalty.
- ``low_memory=True`` with more than one row crashes; ours must give the batched search's tokens.
"""

import copy
from contextlib import nullcontext
from unittest import mock

import pytest
import torch
import transformers.generation.utils as reference_utils
from hypothesis import event, given, settings
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same, assert_same_steps, emitted

ARCHS = sorted(ARCHITECTURES)
#: Hypothesis examples per architecture: a third of the profile's (8 at DECODING_EXAMPLES=25).
PER_ARCH = max(2, settings.default.max_examples // 3)


def ranking_as_the_paper(context_hidden, next_hidden, next_top_k_probs, cosine_matrix_mask, alpha, beam_width):
    """The reference's ``_ranking_fast`` with padded positions left out of the max even where their cosine is NaN."""
    context = context_hidden / context_hidden.norm(dim=2, keepdim=True)
    candidate = next_hidden / next_hidden.norm(dim=2, keepdim=True)
    cosine = torch.matmul(context, candidate.transpose(1, 2)).squeeze(-1)
    cosine = torch.where(cosine_matrix_mask.bool(), cosine, torch.tensor(-float("inf")))
    penalty = cosine.max(dim=-1).values
    score = (1.0 - alpha) * next_top_k_probs.view(-1) - alpha * penalty
    return score.view(-1, beam_width).max(dim=-1).indices


def reference(model, ids, mask, seed, **kwargs):
    """4.55.4's run; with padding, through :func:`ranking_as_the_paper`; ``low_memory`` batches run batched."""
    padded = not bool(mask.all())
    if kwargs.get("low_memory") and ids.shape[0] > 1:
        kwargs = dict(kwargs, low_memory=False)
    patch = mock.patch.object(reference_utils, "_ranking_fast", ranking_as_the_paper) if padded else nullcontext()
    with patch:
        torch.manual_seed(seed)
        return model.generate(ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=PER_ARCH)
@given(batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       alpha=st.sampled_from([0.1, 0.4, 0.6, 0.9, 1.0]), top_k=st.integers(2, 6), steps=st.integers(1, 10),
       low_memory=st.booleans(), repetition_penalty=st.sampled_from([1.0, 1.3]), eos_pick=st.integers(0, 9))
def test_matches_reference(arch, batch, seed, alpha, top_k, steps, low_memory, repetition_penalty, eos_pick):
    event(f"rows={batch}")
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    kwargs = dict(penalty_alpha=alpha, top_k=top_k, repetition_penalty=repetition_penalty, max_new_tokens=steps,
                  pad_token_id=PAD, low_memory=low_memory)
    with mock.patch.object(reference_utils, "_ranking_fast", ranking_as_the_paper):
        tokens = emitted(model, ids, mask, seed, steps, PAD, penalty_alpha=alpha, top_k=top_k)[0].tolist()
    kwargs["eos_token_id"] = tokens[eos_pick % len(tokens)]
    outputs = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
    expected = reference(model, ids, mask, seed, **kwargs, **outputs)
    ours = decoding.generate(model, ids, attention_mask=mask, **kwargs, **outputs)
    assert_same(expected, ours)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_unpatched_single_rows_and_low_memory(arch):
    """No padding: the reference's own ranking, batched and ``low_memory`` (one row: it works there)."""
    model = tiny_model(arch)
    ids, mask = prompts(1, 7)
    for low_memory in (False, True):
        kwargs = dict(attention_mask=mask, max_new_tokens=12, penalty_alpha=0.6, top_k=4, low_memory=low_memory,
                      return_dict_in_generate=True, output_scores=True, output_logits=True)
        assert_same(model.generate(ids, **kwargs), decoding.generate(model, ids, **kwargs))


def test_padded_rows_get_nan_penalties_in_the_reference_and_ours_do_not():
    """The documented difference: with padding, 4.55.4's penalty is NaN and it takes the most likely candidate."""
    model = tiny_model("llama")
    ids, mask = prompts(3, 2)
    seen = []
    original = reference_utils._ranking_fast

    def spy(context_hidden, *rest):
        seen.append(bool(torch.isnan(context_hidden / context_hidden.norm(dim=2, keepdim=True)).any()))
        return original(context_hidden, *rest)

    with mock.patch.object(reference_utils, "_ranking_fast", spy):
        buggy = model.generate(ids, attention_mask=mask, max_new_tokens=6, penalty_alpha=0.6, top_k=4)
    assert seen[0]
    greedy_first = model.generate(ids, attention_mask=mask, max_new_tokens=1)
    padded_rows = ~mask.bool().all(dim=1)
    assert torch.equal(buggy[padded_rows, ids.shape[1]], greedy_first[padded_rows, -1])   # NaN: the top candidate
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, penalty_alpha=0.6, top_k=4)
    assert torch.equal(ours, reference(model, ids, mask, 0, max_new_tokens=6, penalty_alpha=0.6, top_k=4))
    assert not torch.equal(ours, buggy)


def test_low_memory_batches_give_the_batched_tokens():
    model = tiny_model("gpt2")
    ids, mask = prompts(3, 5)
    kwargs = dict(max_new_tokens=10, penalty_alpha=0.5, top_k=5)
    batched = decoding.generate(model, ids, attention_mask=mask, **kwargs)
    assert torch.equal(decoding.generate(model, ids, attention_mask=mask, low_memory=True, **kwargs), batched)
    assert torch.equal(batched, reference(model, ids, mask, 0, **kwargs))


def test_hidden_states_attentions_and_streaming_as_the_reference():
    model = copy.deepcopy(tiny_model("llama"))
    model.config._attn_implementation = "eager"          # sdpa returns no attentions
    ids, mask = prompts(1, 3)

    class Recorder:
        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.puts.append("end")

    kwargs = dict(attention_mask=mask, max_new_tokens=5, penalty_alpha=0.6, top_k=3, eos_token_id=None,
                  return_dict_in_generate=True, output_hidden_states=True, output_attentions=True)
    theirs, mine = Recorder(), Recorder()
    expected = model.generate(ids, streamer=theirs, **kwargs)
    ours = decoding.generate(model, ids, streamer=mine, **kwargs)
    assert theirs.puts == mine.puts
    assert torch.equal(expected.sequences, ours.sequences)
    for name in ("hidden_states", "attentions"):
        steps_expected, steps_ours = getattr(expected, name), getattr(ours, name)
        assert len(steps_expected) == len(steps_ours) == 5
        for layers_expected, layers_ours in zip(steps_expected, steps_ours):
            assert_same_steps(list(layers_expected), list(layers_ours))
    assert expected.past_key_values.get_seq_length() == ours.past_key_values.get_seq_length()


def test_eos_stops_rows_and_pads_them():
    model = tiny_model("qwen2")
    ids, mask = prompts(1, 4)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, penalty_alpha=0.6, top_k=4, pad_token_id=PAD)
    first = decoding.generate(model, ids, **kwargs)[0, ids.shape[1] + 2].item()
    out = decoding.generate(model, ids, eos_token_id=[first, EOS], **kwargs)
    assert torch.equal(out, model.generate(ids, eos_token_id=[first, EOS], **kwargs))
    assert out.shape[1] == ids.shape[1] + 3
