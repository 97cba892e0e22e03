"""Every bad input gets a clear error before the first forward pass; docs/errors.md tabulates them.

Each case below is one bad input: the arguments, the exception ``decoding.generate`` raises and
words its message must hold. ``test_bad_input`` runs each one (and checks that the model was never
called); ``test_docs_table`` measures ``model.generate`` on the same arguments and keeps the table in
docs/errors.md equal to what both do. Rewrite the table after changing a case:

    python -m tests.test_errors
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch

import decoding
from decoding.errors import UnknownArgumentError
from tests.models import VOCAB, tiny_model

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- bad-input table: begin (tests/test_errors.py writes it) -->", "<!-- bad-input table: end -->"
IDS = torch.tensor([[5, 6, 7]])


class NotAStreamer:
    """An object passed as a streamer by mistake."""


@dataclass
class Case:
    """One bad input: ``generate(model, ids, **kwargs)`` raises ``error`` with all of ``words`` in its message."""

    name: str
    error: type
    words: tuple
    kwargs: dict = field(default_factory=dict)
    ids: Any = "default"
    arch: str = "llama"
    build: Optional[Callable[[], dict]] = None   # arguments made at run time (tensors on another device, ...)

    def arguments(self) -> tuple[Any, Any, dict]:
        kwargs = dict(self.kwargs)
        if self.build is not None:
            kwargs.update(self.build())
        kwargs.setdefault("max_new_tokens", 3)
        ids = kwargs.pop("input_ids", IDS if isinstance(self.ids, str) else self.ids)
        return tiny_model(self.arch), ids, kwargs


CASES = [
    # input ids
    Case("token id >= vocabulary size", ValueError, ("input_ids", "600", "vocabulary [0, 512)"),
         ids=torch.tensor([[5, 600]])),
    Case("negative token id", ValueError, ("input_ids", "-1", "vocabulary"), ids=torch.tensor([[5, -1]])),
    Case("float input_ids", TypeError, ("input_ids", "integer", "float32", ".long()"), ids=torch.tensor([[5.0, 6.0]])),
    Case("input_ids as a list", TypeError, ("input_ids", "LongTensor", "list", "torch.tensor"), ids=[[5, 6]]),
    Case("1-D input_ids", ValueError, ("2-D", "(2,)", "input_ids[None]"), ids=torch.tensor([5, 6])),
    Case("empty prompt", ValueError, ("empty", "(1, 0)", "input_ids=None", "bos"),
         ids=torch.zeros(1, 0, dtype=torch.long)),
    Case("no input_ids and no bos_token_id", ValueError, ("bos_token_id", "input_ids"), ids=None,
         kwargs=dict(bos_token_id=None)),
    Case("prompt past a learned-position context (GPT-2)", ValueError, ("learned position", "256", "shorten"),
         ids=torch.full((1, 300), 5), arch="gpt2"),
    # attention mask
    Case("mask of another shape", ValueError, ("attention_mask", "(1, 2)", "(1, 3)", "must match"),
         kwargs=dict(attention_mask=torch.ones(1, 2, dtype=torch.long))),
    Case("mask values other than 0/1", ValueError, ("attention_mask", "only 0", "1"),
         kwargs=dict(attention_mask=torch.tensor([[1, 2, 1]]))),
    Case("mask as a list", TypeError, ("attention_mask", "torch.Tensor", "list"),
         kwargs=dict(attention_mask=[[1, 1, 1]])),
    Case("complex mask dtype", TypeError, ("attention_mask", "complex", ".long()"),
         kwargs=dict(attention_mask=torch.ones(1, 3, dtype=torch.complex64))),
    Case("mask on another device than input_ids", ValueError, ("input_ids is on cpu", "attention_mask is on meta",
                                                               "one device"),
         build=lambda: dict(attention_mask=torch.ones(1, 3, dtype=torch.long, device="meta"))),
    Case("input_ids on the meta device", ValueError, ("input_ids", "meta", "real device"),
         build=lambda: dict(input_ids=torch.ones(1, 3, dtype=torch.long, device="meta"),
                            attention_mask=torch.ones(1, 3, dtype=torch.long, device="meta"))),
    # sampling parameters
    Case("temperature < 0", ValueError, ("temperature", ">= 0", "-1.0"), kwargs=dict(do_sample=True, temperature=-1.0)),
    Case("temperature = 0 with sampling", ValueError, ("temperature", "strictly positive", "do_sample=False"),
         kwargs=dict(do_sample=True, temperature=0.0)),
    Case("temperature NaN", ValueError, ("temperature", "nan"), kwargs=dict(do_sample=True, temperature=float("nan"))),
    Case("top_p = 0 with sampling", ValueError, ("top_p", "(0, 1]", "keeps no token"),
         kwargs=dict(do_sample=True, top_p=0.0)),
    Case("top_p > 1", ValueError, ("top_p", "[0, 1]", "1.5"), kwargs=dict(do_sample=True, top_p=1.5)),
    Case("top_k < 0", ValueError, ("top_k", ">= 0", "-1"), kwargs=dict(do_sample=True, top_k=-1)),
    Case("top_k not an integer", ValueError, ("top_k", "integer", "2.5"), kwargs=dict(do_sample=True, top_k=2.5)),
    Case("top_k a tensor", ValueError, ("top_k", "not a tensor", ".item()"), kwargs=dict(do_sample=True, top_k=torch.tensor(3))),
    Case("min_p > 1", ValueError, ("min_p", "[0, 1]", "2.0"), kwargs=dict(do_sample=True, min_p=2.0)),
    Case("typical_p = 0", ValueError, ("typical_p", "(0, 1]", "0.0"), kwargs=dict(do_sample=True, typical_p=0.0)),
    Case("epsilon_cutoff >= 1", ValueError, ("epsilon_cutoff", "[0, 1)"), kwargs=dict(do_sample=True, epsilon_cutoff=1.5)),
    Case("repetition_penalty = 0", ValueError, ("repetition_penalty", "> 0"), kwargs=dict(repetition_penalty=0.0)),
    Case("no_repeat_ngram_size < 0", ValueError, ("no_repeat_ngram_size", ">= 0", "-1"),
         kwargs=dict(no_repeat_ngram_size=-1)),
    Case("dry_multiplier a tensor", ValueError, ("dry_multiplier", "not a tensor", ".item()"),
         kwargs=dict(dry_multiplier=torch.tensor([1.0, 2.0]))),
    Case("seed of the wrong type", (TypeError, ValueError), ("seed",), kwargs=dict(do_sample=True, seed="abc")),
    # beams and sequences
    Case("num_beams = 0", ValueError, ("num_beams", ">= 1", "0"), kwargs=dict(num_beams=0)),
    Case("num_beams < 0", ValueError, ("num_beams", ">= 1", "-1"), kwargs=dict(num_beams=-1)),
    Case("num_return_sequences > num_beams", ValueError, ("num_return_sequences", "(3)", "num_beams", "(2)"),
         kwargs=dict(num_beams=2, num_return_sequences=3)),
    Case("num_return_sequences > 1 with greedy", ValueError, ("num_return_sequences", "do_sample=True"),
         kwargs=dict(num_return_sequences=2)),
    Case("num_return_sequences = 0", ValueError, ("num_return_sequences", ">= 1", "0"),
         kwargs=dict(do_sample=True, num_return_sequences=0)),
    Case("length_penalty NaN with beams", ValueError, ("length_penalty", "finite"),
         kwargs=dict(num_beams=2, length_penalty=float("nan"))),
    # lengths
    Case("max_new_tokens = 0", ValueError, ("max_new_tokens", "greater than 0", "0"), kwargs=dict(max_new_tokens=0)),
    Case("max_new_tokens < 0", ValueError, ("max_new_tokens", "greater than 0", "-1"), kwargs=dict(max_new_tokens=-1)),
    Case("max_length <= prompt length", ValueError, ("max_length", "nothing can be generated", "max_new_tokens"),
         kwargs=dict(max_length=2, max_new_tokens=None)),
    Case("max_time <= 0", ValueError, ("max_time", "positive"), kwargs=dict(max_time=-1.0)),
    # token ids of the settings
    Case("eos_token_id outside the vocabulary", ValueError, ("eos_token_id", "[600]", "vocabulary [0, 512)"),
         kwargs=dict(eos_token_id=600)),
    Case("negative eos_token_id", ValueError, ("eos_token_id", "[-3]", "vocabulary"), kwargs=dict(eos_token_id=-3)),
    Case("eos_token_id list with an id outside", ValueError, ("eos_token_id", "[700]"), kwargs=dict(eos_token_id=[2, 700])),
    Case("eos_token_id of the wrong type", TypeError, ("eos_token_id", "token id", "2.5"), kwargs=dict(eos_token_id=2.5)),
    Case("pad_token_id outside the vocabulary", ValueError, ("pad_token_id", "[600]", "vocabulary"),
         kwargs=dict(pad_token_id=600)),
    Case("bos_token_id outside the vocabulary", ValueError, ("bos_token_id", "[600]", "vocabulary"),
         kwargs=dict(bos_token_id=600)),
    Case("forced_bos_token_id outside the vocabulary", ValueError, ("forced_bos_token_id", "[600]", "vocabulary"),
         kwargs=dict(forced_bos_token_id=600)),
    Case("forced_eos_token_id outside the vocabulary", ValueError, ("forced_eos_token_id", "[600]", "vocabulary"),
         kwargs=dict(forced_eos_token_id=600)),
    Case("suppress_tokens outside the vocabulary", ValueError, ("suppress_tokens", "[600]", "vocabulary"),
         kwargs=dict(suppress_tokens=[600])),
    Case("begin_suppress_tokens outside the vocabulary", ValueError, ("begin_suppress_tokens", "[600]"),
         kwargs=dict(begin_suppress_tokens=[600])),
    Case("bad_words_ids outside the vocabulary", ValueError, ("bad_words_ids", "[600]", "vocabulary"),
         kwargs=dict(bad_words_ids=[[600]])),
    # keywords and call arguments
    Case("unknown keyword (a typo)", UnknownArgumentError, ("max_new_token", "did you mean", "max_new_tokens"),
         kwargs=dict(max_new_token=5)),
    Case("stop_strings without a tokenizer", ValueError, ("stop_strings", "tokenizer="), kwargs=dict(stop_strings=["x"])),
    Case("generation_config of the wrong type", TypeError, ("generation_config", "GenerationConfig", "int"),
         kwargs=dict(generation_config=5)),
    Case("streamer without put/end", TypeError, ("streamer", "put", "end"), kwargs=dict(streamer=NotAStreamer())),
    Case("logits_processor holding a non-callable", TypeError, ("logits_processor", "not callable"),
         kwargs=dict(logits_processor=[5])),
    Case("stopping_criteria not a list", TypeError, ("stopping_criteria", "list of callables"),
         kwargs=dict(stopping_criteria=5)),
    Case("a keyword of the reference decoding does not implement", NotImplementedError,
         ("token_healing", "does not implement", "model.generate"), kwargs=dict(token_healing=True)),
]


def _first_line(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def outcome(fn: Callable[[], Any]) -> str:
    """What a call did, in a few words: the exception and the start of its message, or "accepted"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as error:   # noqa: BLE001 (the reference's behaviour, whatever it is, is what we record)
        return f"`{type(error).__name__}`: {_first_line(error)}"
    return "accepted"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """The markdown table of docs/errors.md: each case, what ``model.generate`` does, what ``decoding`` raises."""
    rows = ["| Bad input | `model.generate` (transformers 5.23) | `decoding.generate` |", "|---|---|---|"]
    for case in CASES:
        model, ids, kwargs = case.arguments()
        torch.manual_seed(0)
        reference = outcome(lambda: model.generate(ids, **kwargs))
        model, ids, kwargs = case.arguments()
        ours = outcome(lambda: decoding.generate(model, ids, **kwargs))
        rows.append(f"| {_cell(case.name)} | {_cell(reference)} | {_cell(ours)} |")
    return "\n".join(rows) + "\n"


def _doc_table(text: str) -> str:
    start = text.index("\n", text.index(BEGIN)) + 1
    return text[start:text.index(END)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case):
    """The error's type and words, raised before any forward pass."""
    model, ids, kwargs = case.arguments()
    calls = []
    handle = model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(case.error) as caught:
            decoding.generate(model, ids, **kwargs)
    finally:
        handle.remove()
    message = str(caught.value)
    for word in case.words:
        assert word in message, (word, message)
    assert calls == [], "the model ran before the error"


def test_case_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES)


def test_docs_table():
    """docs/errors.md holds the table as measured now (``python -m tests.test_errors`` rewrites it)."""
    assert _doc_table(DOC.read_text(encoding="utf-8")) == table()


def write_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("\n", text.index(BEGIN)) + 1
    DOC.write_text(text[:start] + table() + text[text.index(END):], encoding="utf-8")


if __name__ == "__main__":
    write_docs()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_float_or_bool_mask_of_0_and_1_is_accepted(arch):
    """As the reference accepts it (the fuzzer found GPT-2 counting float positions from a float mask)."""
    model, ids = tiny_model(arch), torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    expected = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, num_beams=2)
    for other in (mask.float(), mask.bool()):
        assert torch.equal(decoding.generate(model, ids, attention_mask=other, max_new_tokens=3, num_beams=2), expected)
