"""stop_strings against the reference's StopStringCriteria, and end to end through generate."""

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding.stopping.stop_strings import StopStringCriteria
from tests.models import PAD, prompts, tiny_model
from tests.tokenizer import byte_fallback_tokenizer, byte_tokenizer

TOKENIZERS = {"byte_level": byte_tokenizer, "byte_fallback": byte_fallback_tokenizer}
ALPHABET = list("stop aenxrhi€é日")
TEXT = st.text(alphabet=ALPHABET, min_size=1, max_size=12)


@given(kind=st.sampled_from(sorted(TOKENIZERS)), texts=st.lists(TEXT, min_size=1, max_size=4),
       stops=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=5), min_size=1, max_size=3),
       cut=st.integers(0, 30))
def test_matches_the_reference_criterion(kind, texts, stops, cut):
    tok = TOKENIZERS[kind]()
    rows = [tok(t, add_special_tokens=False).input_ids for t in texts]
    rows = [r[:max(1, len(r) - cut % len(r))] for r in rows]  # end the rows at arbitrary tokens
    ids, _ = decoding.left_pad(rows, pad_token_id=PAD)
    ours = StopStringCriteria(tok, stops)(ids)
    theirs = transformers.StopStringCriteria(tok, stops)(ids, None)
    assert torch.equal(ours, theirs), (texts, stops, ids.tolist())


def test_documented_cases():
    """Overhangs on either side count; an occurrence wholly before the last token does not."""
    tok = byte_tokenizer()
    criterion = StopStringCriteria(tok, ["stop"])

    def done(*pieces):
        ids = [tid for p in pieces for tid in tok(p, add_special_tokens=False).input_ids]
        return bool(criterion(torch.tensor([ids]))[0])

    def done_tokens(*pieces):  # each piece a single token id list, last token is the last piece
        ids = sum((tok(p, add_special_tokens=False).input_ids for p in pieces), [])
        return bool(criterion(torch.tensor([ids]))[0])

    assert done("s", "t", "op")
    assert done("x", "sto", "p")
    assert not done_tokens("stop", "x")  # last token is 'x': the string lies before it
    assert not done("s", "t", "o")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generate_with_stop_strings_matches_reference(arch):
    model, tok = tiny_model(arch), byte_tokenizer()
    ids, mask = prompts(3, 7)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=15, eos_token_id=None)
    # a stop string that row 1 actually produces: the text of its first printable generated token
    # after the second (ids beyond this small tokenizer's vocabulary decode to nothing)
    step, text = next((i, tok.decode([t])) for i, t in enumerate(plain[1, ids.shape[1]:].tolist())
                      if i >= 2 and tok.decode([t]).strip().isascii() and tok.decode([t]).strip().isprintable()
                      and tok.decode([t]).strip())
    results = []
    for kwargs in (dict(), dict(do_sample=True)):
        torch.manual_seed(0)
        reference = model.generate(ids, attention_mask=mask, max_new_tokens=15, stop_strings=[text, "zz"],
                                   tokenizer=tok, pad_token_id=PAD, **kwargs)
        torch.manual_seed(0)
        ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=15, stop_strings=[text, "zz"],
                                 tokenizer=tok, pad_token_id=PAD, **kwargs)
        assert torch.equal(reference, ours)
        results.append(ours)
    greedy = results[0]
    # greedy row 1 stops at (or before) that token, then is padded
    assert greedy.shape[1] < plain.shape[1] or (greedy[1, ids.shape[1] + step + 1:] == PAD).all()


def test_stop_strings_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer=..."):
        decoding.generate(tiny_model("llama"), torch.tensor([[5, 6]]), max_new_tokens=3, stop_strings="x")


def test_max_time_stops_every_row():
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=50, max_time=1e-9, eos_token_id=None)
    assert out.shape[1] == ids.shape[1] + 1  # the first check after one token already stops
