"""Streamers: the call pattern of the reference, and text that arrives whole."""

import io
import threading
from contextlib import redirect_stdout

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import decoding
from tests.models import PAD, prompts, tiny_model
from tests.tokenizer import byte_tokenizer


class Recorder(decoding.BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ended += 1


@given(batch=st.integers(1, 4), seed=st.integers(0, 1000), do_sample=st.booleans(), eos=st.integers(3, 511))
def test_streamer_receives_the_returned_sequence(batch, seed, do_sample, eos):
    model = tiny_model("llama")
    ids, mask = prompts(batch, seed)
    ours, theirs = Recorder(), Recorder()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=do_sample, eos_token_id=eos, pad_token_id=PAD)
    torch.manual_seed(seed)
    out = decoding.generate(model, ids, streamer=ours, **kwargs)
    torch.manual_seed(seed)
    model.generate(ids, streamer=theirs, **kwargs)
    assert ours.ended == 1
    assert torch.equal(ours.puts[0], ids) and ours.puts[0].dim() == 2
    assert all(p.dim() == 1 and p.device.type == "cpu" for p in ours.puts[1:])
    assert torch.equal(torch.cat([ours.puts[0]] + [p[:, None] for p in ours.puts[1:]], dim=1), out)
    # the reference's call pattern, put for put
    assert len(ours.puts) == len(theirs.puts)
    assert all(torch.equal(a, b) for a, b in zip(ours.puts, theirs.puts))


def test_transformers_text_streamer_works_with_our_loop():
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids = tok("the cat", return_tensors="pt").input_ids
    printed = []
    for run in (model.generate, lambda *a, **k: decoding.generate(model, *a, **k)):
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            out = run(ids, max_new_tokens=15, streamer=transformers.TextStreamer(tok, skip_prompt=True))
        printed.append(buffer.getvalue())
    assert printed[0] == printed[1]
    assert printed[1].rstrip("\n") == tok.decode(out[0, ids.shape[1]:])


class FixedModelTokens:
    """A streamer feed: the prompt, then the given ids one at a time, then end."""

    @staticmethod
    def feed(streamer, prompt_ids, new_ids):
        streamer.put(torch.tensor([prompt_ids]))
        for token in new_ids:
            streamer.put(torch.tensor([token]))
        streamer.end()


def test_text_streamer_never_prints_half_a_character():
    tok = byte_tokenizer()
    text = " naïve café costs 5€ — 日本語 ok"
    new_ids = tok(text).input_ids
    pieces = []

    class Capture(decoding.TextStreamer):
        def on_text(self, piece, stream_end=False):
            pieces.append(piece)

    FixedModelTokens.feed(Capture(tok, skip_prompt=True), tok("hi").input_ids, new_ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert len([p for p in pieces if p]) > 5  # text arrives as it goes, not all at the end


def test_text_streamer_prints_to_file_with_prompt():
    tok = byte_tokenizer()
    out = io.StringIO()
    FixedModelTokens.feed(decoding.TextStreamer(tok, file=out), tok("say:").input_ids, tok(" yes\nno").input_ids)
    assert out.getvalue() == "say: yes\nno\n"


def test_text_streamer_refuses_a_batch():
    with pytest.raises(ValueError, match="batch of 2 rows"):
        decoding.TextStreamer(byte_tokenizer()).put(torch.zeros(2, 3, dtype=torch.long))


def test_iterator_streamer_from_another_thread():
    model, tok = tiny_model("qwen2"), byte_tokenizer()
    ids = tok("the", return_tensors="pt").input_ids
    streamer = decoding.TextIteratorStreamer(tok, skip_prompt=True, timeout=60)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "out", decoding.generate(model, ids, max_new_tokens=12, streamer=streamer)))
    worker.start()
    text = "".join(streamer)
    worker.join()
    assert text == tok.decode(result["out"][0, ids.shape[1]:])


def test_our_streamer_inside_model_generate():
    model, tok = tiny_model("gpt2"), byte_tokenizer()
    ids = tok("in the", return_tensors="pt").input_ids
    buffer = io.StringIO()
    out = model.generate(ids, max_new_tokens=10, streamer=decoding.TextStreamer(tok, file=buffer))
    assert buffer.getvalue() == tok.decode(out[0]) + "\n"
