"""Diverse (group) beam search under transformers 5 (which no longer runs it): checks, invariants, a slow
straightforward version, the diversity processor, the tree and streaming. Token-for-token equality with the
last release that runs it natively is in tests/transformers_4_55/test_diverse_beam_search.py."""

import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding.processors import HammingDiversityLogitsProcessor
from decoding.strategies.beam import group_run, path, returned
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model
from tests.test_beam_streaming import PlainRecorder, Recorder   # the beam and plain recording streamers

ARCHS = sorted(ARCHITECTURES)
IDS = torch.tensor([[5, 6, 7]])


@pytest.fixture
def model():
    m = tiny_model("llama")
    calls = []
    handle = m.register_forward_pre_hook(lambda *args: calls.append(1))
    m.forward_calls = calls
    yield m
    handle.remove()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=3, num_beam_groups=2, diversity_penalty=1.0),
     r"num_beams.*\(3\).*multiple.*num_beam_groups.*\(2\)"),
    (dict(num_beams=1, num_beam_groups=2, diversity_penalty=1.0), r"num_beams.*\(1\).*multiple"),
    (dict(num_beams=4, num_beam_groups=2), r"num_beam_groups=2.*needs `diversity_penalty` > 0"),
    (dict(num_beams=4, diversity_penalty=1.0), r"diversity_penalty=1.0.*num_beam_groups >= 2"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, do_sample=True), r"does not sample.*do_sample=False"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), r"diversity_penalty.*>= 0"),
    (dict(num_beams=4, num_beam_groups=0, diversity_penalty=1.0), r"num_beam_groups.*>= 1"),
])
def test_arguments_are_checked_before_the_first_forward(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        decoding.generate(model, IDS, max_new_tokens=3, **kwargs)
    assert model.forward_calls == []


def test_processors_that_keep_state_between_calls_are_refused(model):
    class Counting:
        def __call__(self, input_ids, scores):
            return scores

        def accept(self, tokens):
            pass

    with pytest.raises(ValueError, match=r"once per group.*Counting.*num_beam_groups=1"):
        decoding.generate(model, IDS, max_new_tokens=3, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                          logits_processor=[Counting()])
    assert model.forward_calls == []


def test_one_group_is_plain_beam_search(model):
    """num_beam_groups=1 is beam search itself (the same table entry), whatever diversity would have done."""
    ids, mask = prompts(2, 3)
    kwargs = dict(attention_mask=mask, num_beams=4, max_new_tokens=6, num_return_sequences=2, pad_token_id=PAD)
    assert decoding.strategies.mode(decoding.generation.prepare_call(model, ids, num_beams=4)) == "beam_search"
    assert torch.equal(decoding.generate(model, ids, num_beam_groups=1, **kwargs),
                       decoding.generate(model, ids, **kwargs))


@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000), num_beams=st.integers(2, 4),
       steps=st.integers(1, 8), length_penalty=st.floats(-1.0, 2.0),
       early_stopping=st.sampled_from([False, True, "never"]), eos_pick=st.integers(0, 20),
       extra=st.sampled_from([{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}]))
def test_the_group_loop_with_one_group_is_beam_search(arch, batch, seed, num_beams, steps, length_penalty,
                                                       early_stopping, eos_pick, extra):
    """The group loop run with a single group gives beam search's sequences, scores and beam indices; only the
    fill after an eos differs (transformers 5 fills with eos when pad is 0, 4.55's scorer with pad). Processors
    with per-row data (repetition_penalty's padding lengths) see the rows they were built for."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    tokens = decoding.generate(model, ids, attention_mask=mask, num_beams=num_beams, max_new_tokens=steps,
                               eos_token_id=None, pad_token_id=PAD)[:, ids.shape[1]:].reshape(-1).tolist()
    eos = tokens[eos_pick % len(tokens)]
    kwargs = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=steps, pad_token_id=PAD, eos_token_id=eos,
                  length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=num_beams,
                  return_dict_in_generate=True, output_scores=True, **extra)
    plain = decoding.generate(model, ids, **kwargs)
    grouped = decoding.generate(model, ids, strategy=group_run.run, **kwargs)
    prompt = ids.shape[1]
    ended = torch.cumsum(plain.sequences[:, prompt:] == eos, dim=1) - (plain.sequences[:, prompt:] == eos).long()
    after_eos = torch.cat([torch.zeros_like(ids[:1]).expand(plain.sequences.shape[0], -1).bool(), ended > 0], dim=1)
    assert plain.sequences.shape == grouped.sequences.shape
    assert torch.equal(plain.sequences[~after_eos], grouped.sequences[~after_eos])
    torch.testing.assert_close(grouped.sequences_scores, plain.sequences_scores, atol=1e-5, rtol=0)
    assert torch.equal(grouped.beam_indices, plain.beam_indices.long())


def naive_diverse_beam_search(model, prompt, num_beams, groups, penalty, steps, length_penalty, nrs):
    """Diverse beam search as the paper writes it, for one prompt without eos: full forwards, no cache, lists."""
    n = num_beams // groups
    beams = [[(list(prompt), 0.0)] for _ in range(groups)]                    # per group: (ids, sum of log-probs)
    for _ in range(steps):
        chosen_now = []
        for g in range(groups):
            candidates = []
            for ids, score in beams[g]:
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0, -1].float()
                log_probs = torch.log_softmax(logits, -1) - penalty * torch.bincount(
                    torch.tensor(chosen_now, dtype=torch.long), minlength=logits.shape[-1]).float()
                candidates += [(score + float(log_probs[v]), ids + [v]) for v in range(logits.shape[-1])]
            candidates.sort(key=lambda c: -c[0])
            beams[g] = [(ids, score) for score, ids in candidates[:n]]
            chosen_now += [ids[-1] for ids, _ in beams[g]]
    finished = [(score / steps ** length_penalty, ids) for group in beams for ids, score in group]
    finished.sort(key=lambda f: -f[0])
    return [ids for _, ids in finished[:nrs]]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_slow_straightforward_version_gives_the_same_sequences(arch):
    model = tiny_model(arch)
    for seed, (groups, n, penalty) in enumerate([(2, 1, 0.5), (2, 2, 1.5), (3, 1, 3.0)]):
        ids, _ = prompts(1, seed)
        out = decoding.generate(model, ids, num_beams=groups * n, num_beam_groups=groups, diversity_penalty=penalty,
                                max_new_tokens=5, eos_token_id=None, pad_token_id=PAD, num_return_sequences=2)
        expected = naive_diverse_beam_search(model, ids[0].tolist(), groups * n, groups, penalty, 5, 1.0, 2)
        assert out.tolist() == expected


@given(batch=st.integers(1, 3), groups=st.integers(2, 4), n=st.integers(1, 3), group=st.integers(0, 3),
       penalty=st.floats(0.01, 10.0), seed=st.integers(0, 1000))
def test_the_hamming_processor_subtracts_the_penalty_per_earlier_choice(batch, groups, n, group, penalty, seed):
    group = group % groups
    g = torch.Generator().manual_seed(seed)
    vocab, beams = 7, groups * n
    scores = torch.randn(batch * beams, vocab, generator=g)
    current = torch.randint(0, vocab, (batch * beams,), generator=g)
    processor = HammingDiversityLogitsProcessor(penalty, beams, groups)
    processor.set_group(group, current)
    out = processor(torch.zeros(batch * beams, 1, dtype=torch.long), scores)
    for row in range(batch * beams):
        b, j = divmod(row, beams)
        expected = scores[row].clone()
        if j // n == group:
            for earlier in current[b * beams:b * beams + group * n].tolist():
                expected[earlier] -= penalty
        torch.testing.assert_close(out[row], expected)


def test_the_hamming_processor_refuses_to_run_outside_the_group_loop():
    with pytest.raises(RuntimeError, match="set_group"):
        HammingDiversityLogitsProcessor(1.0, 4, 2)(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="diversity_penalty"):
        HammingDiversityLogitsProcessor(0.0, 4, 2)
    with pytest.raises(ValueError, match="divide"):
        HammingDiversityLogitsProcessor(1.0, 5, 2)


def test_the_pipeline_shows_the_penalty_where_4_55_put_it(model):
    names = decoding.pipeline(model, IDS, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                              sequence_bias={(9,): 1.0}, repetition_penalty=1.2).names()
    assert names == ["SequenceBiasLogitsProcessor", "HammingDiversityLogitsProcessor",
                     "RepetitionPenaltyLogitsProcessor"]


def test_a_large_penalty_makes_the_groups_start_differently():
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 5)
    out = decoding.generate(model, ids, attention_mask=mask, num_beams=3, num_beam_groups=3, diversity_penalty=1e4,
                            max_new_tokens=4, eos_token_id=None, pad_token_id=PAD, num_return_sequences=3)
    firsts = out[:, ids.shape[1]].view(2, 3)
    assert all(len(set(row.tolist())) == 3 for row in firsts)
    same = decoding.generate(model, ids, attention_mask=mask, num_beams=3, num_beam_groups=3, diversity_penalty=1e-6,
                             max_new_tokens=4, eos_token_id=None, pad_token_id=PAD, num_return_sequences=3)
    assert all(len(set(row.tolist())) == 1 for row in same[:, ids.shape[1]].view(2, 3))


@given(arch=st.sampled_from(ARCHS), seed=st.integers(0, 1000), groups=st.integers(2, 3), n=st.integers(1, 2),
       eos_pick=st.integers(0, 9))
def test_the_tree_holds_the_returned_sequences_and_their_scores(arch, seed, groups, n, eos_pick):
    model = tiny_model(arch)
    ids, mask = prompts(2, seed)
    tokens = decoding.generate(model, ids, attention_mask=mask, num_beams=groups * n, num_beam_groups=groups,
                               diversity_penalty=1.0, max_new_tokens=6, eos_token_id=None,
                               pad_token_id=PAD)[:, ids.shape[1]:].reshape(-1).tolist()
    out = decoding.generate(model, ids, attention_mask=mask, num_beams=groups * n, num_beam_groups=groups,
                            diversity_penalty=1.0, max_new_tokens=6, eos_token_id=tokens[eos_pick % len(tokens)],
                            pad_token_id=PAD, num_return_sequences=groups * n, return_dict_in_generate=True,
                            output_scores=True, output_beam_tree=True)
    nodes = out.trace["beam_tree"]
    ranked = returned(nodes)
    assert [(node["prompt"], node["rank"]) for node in ranked] == [(b, r) for b in range(2) for r in range(groups * n)]
    for row, node in enumerate(ranked):
        generated = path(nodes, node["id"])
        assert out.sequences[row, ids.shape[1]:ids.shape[1] + len(generated)].tolist() == generated
        assert abs(node["score"] - float(out.sequences_scores[row])) < 1e-4
    for node in nodes[2:]:
        parent = nodes[node["parent"]]
        expected = parent["log_prob"] + float(out.scores[node["step"]][node["beam_index"], node["token"]])
        assert abs(node["log_prob"] - expected) < 1e-3
        assert node["group"] == (node["beam_index"] % (groups * n)) // n


def test_streamers_see_the_live_beams_and_the_best_sequence():
    model = tiny_model("llama")
    ids, mask = prompts(2, 7)
    kwargs = dict(attention_mask=mask, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=5,
                  eos_token_id=None, pad_token_id=PAD, return_dict_in_generate=True, output_scores=True)
    plain = decoding.generate(model, ids, **kwargs)
    beams, lines = Recorder(), PlainRecorder()
    assert torch.equal(decoding.generate(model, ids, streamer=beams, **kwargs).sequences, plain.sequences)
    assert torch.equal(decoding.generate(model, ids, streamer=lines, **kwargs).sequences, plain.sequences)
    assert [step for step, _ in beams.steps] == list(range(5))
    last = beams.steps[-1][1]
    for b in range(2):
        assert sorted(beam.slot for beam in last[b]) == [0, 1, 2, 3]
        best = max(last[b], key=lambda beam: beam.score)
        assert best.ids == plain.sequences[b, ids.shape[1]:].tolist()
    assert torch.equal(beams.finished[0][0], plain.sequences)
    assert torch.equal(lines.puts[0], ids) and lines.ends == 1
    assert torch.equal(torch.stack(lines.puts[1:], dim=1), plain.sequences[:, ids.shape[1]:])
    text = io.StringIO()
    decoding.generate(model, ids, streamer=decoding.BeamTextStreamer(
        type("Ids", (), {"decode": lambda self, ids, **k: str(ids)})(), file=text), **kwargs)
    assert text.getvalue().count("step ") == 5
