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


def slow_cot_decoding(model, ids, mask, k, steps):
    """CoT-decoding the obvious way: the reference's first-step logits, then one reference greedy run per
    branch from the prompt plus that branch's first token (the prompt read k + 1 times), margins from the
    reference's own per-step scores; ``[batch, prompt_len + steps]`` padded with PAD."""
    batch, prompt_length = ids.shape
    first_step = model.generate(ids, attention_mask=mask, max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD,
                                return_dict_in_generate=True, output_logits=True)
    first = first_step.logits[0].topk(k, dim=-1).indices                           # [batch, k]
    results, margins = [], []
    for j in range(k):
        start = torch.cat([ids, first[:, j:j + 1]], dim=1)
        branch = model.generate(start, attention_mask=torch.cat([mask, torch.ones_like(mask[:, :1])], 1),
                                max_new_tokens=steps - 1, eos_token_id=EOS, pad_token_id=PAD,
                                return_dict_in_generate=True, output_scores=True)
        sequences = branch.sequences.clone()
        generated = sequences[:, prompt_length:]                                   # first token included
        ended = torch.zeros(batch, dtype=torch.bool)
        total, count = torch.zeros(batch), torch.zeros(batch)
        for t in range(generated.shape[1]):
            if t > 0:
                top2 = branch.scores[t - 1].softmax(-1).topk(2, dim=-1).values
                total += torch.where(~ended, top2[:, 0] - top2[:, 1], 0.0)
                count += ~ended
            generated[:, t] = torch.where(ended, PAD, generated[:, t])             # after eos: padding
            ended |= generated[:, t] == EOS
        padded = torch.full((batch, prompt_length + steps), PAD)
        padded[:, :sequences.shape[1]] = sequences
        results.append(padded)
        margins.append(total / count.clamp(min=1))
    best = torch.stack(margins, 1).argmax(1)
    return torch.stack(results, 1)[torch.arange(batch), best]


@settings(max_examples=12)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       k=st.integers(2, 4), steps=st.integers(2, 8))
def test_cot_decoding_equals_k_greedy_runs_ranked_by_margin(arch, batch, seed, k, steps):
    model, cot_decoding = tiny_model(arch), example("cot_decoding").cot_decoding
    ids, mask = prompts(batch, seed)
    expected = slow_cot_decoding(model, ids, mask, k, steps)
    ours = decoding.generate(model, ids, attention_mask=mask, strategy=lambda call: cot_decoding(call, k=k),
                             max_new_tokens=steps, eos_token_id=EOS, pad_token_id=PAD)
    padded = torch.full_like(expected, PAD)
    padded[:, :ours.shape[1]] = ours
    assert torch.equal(padded, expected)


def test_cot_decoding_reads_the_prompt_once():
    model, cot_decoding = tiny_model("llama"), example("cot_decoding").cot_decoding
    ids, mask = prompts(2, 1)
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        decoding.generate(model, ids, attention_mask=mask, strategy=lambda call: cot_decoding(call, k=3),
                          max_new_tokens=4, eos_token_id=None, pad_token_id=PAD)
    finally:
        hook.remove()
    assert widths == [ids.shape] + [(2 * 3, 1)] * 3


def slow_greedy(model, ids, mask, steps):
    """Greedy the obvious way: a full forward over the whole sequences at every step (no cache), positions
    counted from each row's first real token, pad written after a row's eos."""
    sequences, mask, ended = ids, mask, torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits[:, -1]
        token = torch.where(ended, PAD, logits.argmax(-1))
        sequences = torch.cat([sequences, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        ended |= token == EOS
        if ended.all():
            break
    return sequences


@settings(max_examples=12)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       steps=st.integers(1, 8))
def test_the_students_greedy_loop_equals_full_forward_greedy(arch, batch, seed, steps):
    model, greedy = tiny_model(arch), example("plain_greedy").greedy
    ids, mask = prompts(batch, seed)
    ours = decoding.generate(model, ids, attention_mask=mask, strategy=greedy, max_new_tokens=steps,
                             eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(ours, slow_greedy(model, ids, mask, steps))
