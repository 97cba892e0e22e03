"""Streaming with beams: beam streamers see every live beam at every step; plain streamers the best sequence."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model
from tests.test_beam_search import emitted_tokens
from tests.tokenizer import byte_tokenizer


class Recorder(decoding.BeamStreamer):
    def __init__(self):
        self.steps, self.finished = [], []

    def on_step(self, step, beams):
        self.steps.append((step, beams))

    def on_finish(self, sequences, scores):
        self.finished.append((sequences, scores))


class PlainRecorder:
    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        assert self.ends == 0, "put after end"
        self.puts.append(value.clone())

    def end(self):
        self.ends += 1


def run(model, ids, streamer, **kwargs):
    torch.manual_seed(0)
    return decoding.generate(model, ids, streamer=streamer, return_dict_in_generate=True, output_scores=True,
                             **kwargs)


@settings(max_examples=30)
@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 1000),
       num_beams=st.integers(2, 4), do_sample=st.booleans(), early_stopping=st.sampled_from([False, True, "never"]))
def test_beam_streamer_sees_every_live_beam(arch, batch, seed, num_beams, do_sample, early_stopping):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    eos = emitted_tokens(model, ids, mask, 8, num_beams)[1]
    kwargs = dict(attention_mask=mask, max_new_tokens=8, num_beams=num_beams, eos_token_id=eos, pad_token_id=PAD,
                  do_sample=do_sample, early_stopping=early_stopping, num_return_sequences=num_beams)
    streamer = Recorder()
    out = run(model, ids, streamer, **kwargs)
    plain = run(model, ids, None, **kwargs)
    assert torch.equal(out.sequences, plain.sequences)  # streaming changes nothing

    assert [step for step, _ in streamer.steps] == list(range(len(out.scores)))
    previous = [{0: ([], 0.0)} for _ in range(batch)]  # slot -> (ids, score); the prompt is slot 0
    for step, beams in streamer.steps:
        assert len(beams) == batch
        current = []
        for b, live in enumerate(beams):
            assert len(live) <= num_beams
            assert [beam.score for beam in live] == sorted((beam.score for beam in live), reverse=True)
            for beam in live:
                assert beam.prompt == b and len(beam.ids) == step + 1
                if beam.parent in previous[b]:  # a parent that was live at the previous step
                    parent_ids, parent_score = previous[b][beam.parent]
                    assert beam.ids[:-1] == parent_ids
                    added = float(out.scores[step][b * num_beams + beam.parent, beam.ids[-1]])
                    assert math.isclose(beam.score, parent_score + added, abs_tol=1e-4)
                assert eos != beam.ids[-1]  # a beam that just finished is not live
            current.append({beam.slot: (beam.ids, beam.score) for beam in live})
        previous = current
    assert len(streamer.finished) == 1
    sequences, scores = streamer.finished[0]
    assert torch.equal(sequences, out.sequences) and torch.equal(scores, out.sequences_scores)


def test_beam_streamer_parents_are_previous_slots():
    """At least one step continues a beam other than slot 0 (the parent field carries information)."""
    model = tiny_model("llama")
    ids, mask = prompts(1, 2)
    streamer = Recorder()
    run(model, ids, streamer, attention_mask=mask, max_new_tokens=8, num_beams=4, pad_token_id=PAD, eos_token_id=None)
    assert all(beam.parent == 0 for beam in streamer.steps[0][1][0])
    assert any(beam.parent != 0 for _, beams in streamer.steps[1:] for beam in beams[0])


@pytest.mark.parametrize("nrs", [1, 2])
@pytest.mark.parametrize("do_sample", [False, True])
def test_plain_streamer_gets_prompt_then_the_best_sequence(nrs, do_sample):
    model = tiny_model("gpt2")
    ids, mask = prompts(3, 4)
    eos = emitted_tokens(model, ids, mask, 9, 3)[2]
    streamer = PlainRecorder()
    out = run(model, ids, streamer, attention_mask=mask, max_new_tokens=9, num_beams=3, num_return_sequences=nrs,
              eos_token_id=eos, pad_token_id=PAD, do_sample=do_sample)
    assert streamer.ends == 1
    assert torch.equal(streamer.puts[0], ids)  # one row per prompt, not per beam
    streamed = torch.stack(streamer.puts[1:], dim=1)                            # [B, g_best]
    best = out.sequences[::nrs, ids.shape[1]:]
    assert torch.equal(streamed, best[:, :streamed.shape[1]])
    longest_best = int((out.beam_indices[::nrs] >= 0).sum(-1).max())
    assert streamed.shape[1] == longest_best


def test_transformers_text_streamer_prints_the_best_sequence():
    from transformers import TextStreamer

    tokenizer = byte_tokenizer()
    model = tiny_model("llama")
    ids = torch.tensor([tokenizer.encode("the cat")])
    captured = io.StringIO()

    class Captured(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            captured.write(text)

    out = decoding.generate(model, ids, max_new_tokens=6, num_beams=3, eos_token_id=None, pad_token_id=PAD,
                            streamer=Captured(tokenizer, skip_prompt=True))
    assert captured.getvalue().strip() == tokenizer.decode(out[0, ids.shape[1]:]).strip()


def test_beam_text_streamer_writes_beams_and_best():
    tokenizer = byte_tokenizer()
    model = tiny_model("qwen2")
    ids = torch.tensor([tokenizer.encode("hello")])
    text = io.StringIO()
    out = decoding.generate(model, ids, max_new_tokens=4, num_beams=2, eos_token_id=None, pad_token_id=PAD,
                            streamer=decoding.BeamTextStreamer(tokenizer, file=text),
                            return_dict_in_generate=True, output_scores=True)
    lines = text.getvalue().splitlines()
    assert [line for line in lines if line.startswith("step")] == [f"step {i}:" for i in range(4)]
    assert lines[-1] == f"best ({float(out.sequences_scores[0]):.3f}): {tokenizer.decode(out.sequences[0].tolist())!r}"


def test_beam_streamer_without_beams_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="num_beams"):
        decoding.generate(model, torch.tensor([[5, 6]]), max_new_tokens=2, streamer=Recorder())
