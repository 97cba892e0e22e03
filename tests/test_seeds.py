"""``generate(seed=...)``: per-row random streams keyed by (seed, step)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from decoding.strategies import row_seeds
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model

SAMPLING = dict(do_sample=True, top_k=0, temperature=1.2, eos_token_id=None, pad_token_id=PAD)


def alone(ids, mask, row):
    """Row ``row`` of a left-padded batch as a batch of one, its padding removed."""
    keep = mask[row] == 1
    return ids[row, keep][None], mask[row, keep][None]


@settings(max_examples=9)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), prompt_seed=st.integers(0, 1000),
       seeds=st.lists(st.integers(0, 2**40), min_size=4, max_size=4), xtc=st.booleans())
def test_a_row_alone_equals_the_same_row_in_a_padded_batch_of_four(arch, prompt_seed, seeds, xtc):
    model = tiny_model(arch)
    ids, mask = prompts(4, prompt_seed, min_len=2, max_len=8)
    knobs = dict(SAMPLING, max_new_tokens=6, **(dict(xtc_probability=0.5, xtc_threshold=0.05) if xtc else {}))
    batch = decoding.generate(model, ids, attention_mask=mask, seed=seeds, **knobs)
    for row in range(4):
        row_ids, row_mask = alone(ids, mask, row)
        single = decoding.generate(model, row_ids, attention_mask=row_mask, seed=[seeds[row]], **knobs)
        assert torch.equal(single[0, row_ids.shape[1]:], batch[row, ids.shape[1]:])


@settings(max_examples=4)
@given(prompt_seed=st.integers(0, 1000), seed=st.integers(0, 10_000))
def test_num_return_sequences_rows_use_seed_plus_row(prompt_seed, seed):
    model = tiny_model("llama")
    ids, mask = prompts(2, prompt_seed)
    nrs = 3
    batch = decoding.generate(model, ids, attention_mask=mask, seed=seed, num_return_sequences=nrs,
                              max_new_tokens=5, **SAMPLING)
    assert batch.shape[0] == 2 * nrs
    for row in range(2 * nrs):
        row_ids, row_mask = alone(ids, mask, row // nrs)
        single = decoding.generate(model, row_ids, attention_mask=row_mask, seed=seed + row, max_new_tokens=5,
                                   **SAMPLING)
        assert torch.equal(single[0, row_ids.shape[1]:], batch[row, ids.shape[1]:])
    as_list = decoding.generate(model, ids, attention_mask=mask, seed=list(range(seed, seed + 2 * nrs)),
                                num_return_sequences=nrs, max_new_tokens=5, **SAMPLING)
    assert torch.equal(as_list, batch)


@settings(max_examples=4)
@given(seed=st.integers(0, 10_000), global_seeds=st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True))
def test_seeded_runs_replay_and_ignore_the_global_generator(seed, global_seeds):
    model = tiny_model("llama")
    ids, mask = prompts(3, seed)
    outs = []
    for g in global_seeds:
        torch.manual_seed(g)
        outs.append(decoding.generate(model, ids, attention_mask=mask, seed=seed, max_new_tokens=6, **SAMPLING))
    assert torch.equal(outs[0], outs[1])
    other = decoding.generate(model, ids, attention_mask=mask, seed=seed + 100, max_new_tokens=6, **SAMPLING)
    assert not torch.equal(other, outs[0])   # 18 draws at ~2.5 nats each: a different seed differs


@settings(max_examples=4)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3))
def test_without_seed_the_global_generator_path_is_the_reference(seed, batch):
    model = tiny_model("llama")
    ids, mask = prompts(batch, seed)
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, max_new_tokens=6, **SAMPLING)
    after_reference = torch.rand(3)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, **SAMPLING)
    assert torch.equal(ours, reference)
    assert torch.equal(torch.rand(3), after_reference)   # the global stream advanced exactly as the reference's


def test_seeded_sampling_leaves_the_global_generator_alone():
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    decoding.generate(model, ids, attention_mask=mask, seed=9, max_new_tokens=4, **SAMPLING)
    assert torch.equal(torch.rand(3), expected)


def test_greedy_ignores_seed():
    model = tiny_model("llama")
    ids, mask = prompts(3, 1)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, pad_token_id=PAD)
    seeded = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, pad_token_id=PAD, seed=[1, 2, 3])
    assert torch.equal(plain, seeded)


@given(seed=st.integers(0, 2**40), rows=st.integers(1, 8))
def test_an_int_seed_gives_row_r_seed_plus_r(seed, rows):
    assert row_seeds(seed, rows) == [seed + r for r in range(rows)]
    assert row_seeds(None, rows) is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", [1], [1, 2, -3], [1, 2, None], (0, 1, 2, 3)])
def test_bad_seeds_name_the_argument(bad):
    with pytest.raises(ValueError, match="`seed`"):
        row_seeds(bad, 3)
