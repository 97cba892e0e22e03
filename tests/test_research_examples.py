"""The worked strategies of examples/, each against a slow, obviously correct implementation written here,
token for token, alone and in padded batches."""

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def teacher_forced_log_probs(model, sequences, prompt_mask, prompt_length, eos):
    """``[rows]``: the sum of log p(token) over each row's generated tokens up to its first eos, from one
    full forward over the whole sequences (no cache), positions counted from the first real token."""
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(sequences.shape[0], sequences.shape[1] - prompt_length)], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits.float()
    log_probs = torch.log_softmax(logits[:, prompt_length - 1:-1], dim=-1)
    generated = sequences[:, prompt_length:]
    picked = log_probs.gather(2, generated[:, :, None]).squeeze(2)                    # [rows, new]
    is_eos = generated == eos
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0                          # positions past the first eos
    return picked.masked_fill(after_eos, 0.0).sum(1)


@settings(max_examples=12)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       n=st.integers(2, 4), steps=st.integers(2, 8))
def test_best_of_n_equals_sampling_then_ranking_by_a_full_forward(arch, batch, seed, n, steps):
    model, best_of_n = tiny_model(arch), example("best_of_n").best_of_n
    ids, mask = prompts(batch, seed)
    kwargs = dict(attention_mask=mask, do_sample=True, num_return_sequences=n, max_new_tokens=steps,
                  eos_token_id=EOS, pad_token_id=PAD, top_k=20)
    torch.manual_seed(seed)
    samples = model.generate(ids, **kwargs)                                        # [batch * n, length]
    mask_n = mask.repeat_interleave(n, 0)
    scores = teacher_forced_log_probs(model, samples, mask_n, ids.shape[1], EOS).view(batch, n)
    expected = samples.view(batch, n, -1)[torch.arange(batch), scores.argmax(1)]
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, strategy=best_of_n, **kwargs)
    assert torch.equal(ours, expected)
