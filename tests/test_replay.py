"""decoding.replay: a recorded run replays exactly; a fork continues from its step as a fresh generation from the
forked prefix would, and its trace compares with the original's by diff."""

import math

import pytest
import torch

import decoding
from decoding.inputs import left_pad
from decoding.replay import fork, record, replay
from tests.models import PAD, tiny_model

N = 7
COMMON = dict(max_new_tokens=N, eos_token_id=None, pad_token_id=PAD)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def batch():
    return left_pad([[5, 6, 7, 8], [9, 10]], PAD)


def fresh_from_prefix(model, run, prefix_tokens, **kwargs):
    """``generate`` from the prompt plus ``prefix_tokens`` ``[rows, k]``, up to the run's length limit."""
    ids, mask = run.input_ids, run.attention_mask
    prefix = torch.cat([ids, prefix_tokens], 1)
    prefix_mask = torch.cat([mask, torch.ones_like(prefix_tokens)], 1)
    settings = dict(run.kwargs, **kwargs)
    settings["max_new_tokens"] = N - prefix_tokens.shape[1]
    return decoding.generate(model, prefix, attention_mask=prefix_mask, **settings)


def test_replay_is_exact_even_after_the_random_state_moved(model):
    ids, mask = batch()
    torch.manual_seed(3)
    run = record(model, ids, mask, do_sample=True, top_k=20, temperature=0.9, **COMMON)
    torch.manual_seed(99)
    again = replay(run)
    assert torch.equal(again.sequences, run.sequences)
    assert again.trace == run.trace and decoding.diff(run.trace, again.trace).identical


def test_a_forced_token_continues_as_a_fresh_greedy_run_from_the_forked_prefix(model):
    ids, mask = batch()
    run = record(model, ids, mask, repetition_penalty=1.3, **COMMON)
    P, step = ids.shape[1], 2
    runner_up = [e["stages"][-1]["top"][1]["token"] for e in run.trace.steps[step]["rows"]]
    forked = fork(run, step, token=runner_up)
    assert forked.sequences[:, P + step].tolist() == runner_up
    assert torch.equal(forked.sequences[:, :P + step], run.sequences[:, :P + step])     # the shared history
    prefix = torch.cat([run.sequences[:, P:P + step], torch.tensor(runner_up)[:, None]], 1)
    fresh = fresh_from_prefix(model, run, prefix)
    assert torch.equal(forked.sequences, fresh)
    # the fork's trace: the original's steps before the fork, then its own; diff finds the fork
    assert [s["step"] for s in forked.trace.steps] == list(range(N))
    d = decoding.diff(run.trace, forked.trace)
    assert (d.step, d.row) == (step, 0) and d.token_b == runner_up[0] and d.stage is None
    assert d.gap_a > 0 and d.gap_b < 0                         # the forced token was not greedy's choice
    assert forked.trace.data["fork"]["token"] == runner_up
    assert forked.trace.steps[step]["rows"][0]["stages"][-1]["chosen_rank"] == 1


def test_a_sampling_fork_with_another_temperature(model):
    ids, mask = batch()
    torch.manual_seed(1)
    run = record(model, ids, mask, do_sample=True, temperature=1.5, top_k=30, **COMMON)
    P, step = ids.shape[1], 3
    torch.manual_seed(5)
    forked = fork(run, step, temperature=0.4)
    torch.manual_seed(5)
    fresh = fresh_from_prefix(model, run, run.sequences[:, P:P + step], temperature=0.4)
    assert torch.equal(forked.sequences, fresh)
    d = decoding.diff(run.trace, forked.trace)
    assert (d.stage, d.stage_step, d.stage_row) == ("temperature", step, 0)
    assert d.step is None or d.step >= step


def test_a_seeded_fork_keeps_the_runs_random_keys(model):
    ids, mask = batch()
    run = record(model, ids, mask, do_sample=True, top_k=30, seed=7, **COMMON)
    same = fork(run, 2, top_k=30)                              # "changed" to itself: the same draws follow
    assert torch.equal(same.sequences, run.sequences)
    assert decoding.diff(run.trace, same.trace).identical


def test_a_processor_added_at_a_step(model):
    ids, mask = batch()
    run = record(model, ids, mask, **COMMON)
    P, step = ids.shape[1], 4
    banned = int(run.sequences[0, P + step])

    def ban(input_ids, scores):
        scores = scores.clone()
        scores[:, banned] = -math.inf
        return scores

    forked = fork(run, step, processor=ban)
    assert int(forked.sequences[0, P + step]) != banned
    d = decoding.diff(run, forked)                             # runs: the full distributions at the divergence
    assert (d.step, d.row, d.token_a) == (step, 0, banned) and d.b["token_a"]["score"] == -math.inf
    assert (d.stage, d.stage_step) == ("ban", step)
    assert forked.trace.data["stages"] == ["raw", "ban"]


def test_beams_replay_but_do_not_fork_and_bad_arguments(model):
    ids = torch.tensor([[5, 6, 7]])
    run = record(model, ids, num_beams=2, **COMMON)
    assert run.runner is None and torch.equal(replay(run).sequences, run.sequences)
    with pytest.raises(NotImplementedError, match="beam"):
        fork(run, 1, token=3)
    greedy = record(model, ids, **COMMON)
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        fork(greedy, 7, token=3)
    with pytest.raises(ValueError, match="something to change"):
        fork(greedy, 1)
    with pytest.raises(ValueError, match="sets"):
        record(model, ids, trace=True, **COMMON)
