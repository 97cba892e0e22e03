"""Fuzz ``decoding.generate``: any keywords, any values, a valid output or a documented error, never a crash.

Hypothesis draws an architecture, a strategy (greedy, sampling, beam search, beam sampling,
speculative with a draft model, prompt lookup, contrastive search, DoLa, diverse and constrained
beam search) and then arbitrary keyword combinations: every knob
of :data:`decoding.knobs.KNOBS` and every call argument, with sensible values and nonsense (wrong
types, tensors where ints go, huge and negative numbers, NaN, typos). Each call must either return a
well-formed output or raise one of the errors docs/errors.md documents (``ValueError``,
``TypeError``, ``NotImplementedError`` or a class of :mod:`decoding.errors`; of the errors raised
mid-loop only :class:`~decoding.errors.NonFiniteLogitsError` for scores that the settings made
overflow), raised by ``decoding`` itself: an exception from
deep inside torch or transformers is a failure even when its type is allowed.

``DECODING_FUZZ_EXAMPLES`` sets the example count (default 200, about 30 s); ``DECODING_FUZZ_SEED``
switches from the fixed CI examples to a random stream with that seed (benchmarks/fuzz_campaign.sh
runs many seeds).
"""

from __future__ import annotations

import math
import os
import traceback
import warnings

import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import decoding
from decoding.constraints import ConstraintsNotMet
from decoding.errors import GenerationInterrupted, NonFiniteLogitsError
from decoding.knobs import KNOBS
from decoding.outputs import is_output
from tests.models import VOCAB, tiny_model

EXAMPLES = int(os.environ.get("DECODING_FUZZ_EXAMPLES", "200"))
SEED = os.environ.get("DECODING_FUZZ_SEED")
ARCHS = ("llama", "gpt2", "qwen2", "mistral", "opt")
PACKAGE = os.path.dirname(os.path.abspath(decoding.__file__))

STRATEGIES = {
    "greedy": {},
    "sample": {"do_sample": True},
    "beam_search": {"num_beams": 2},
    "beam_sample": {"num_beams": 2, "do_sample": True},
    "draft": {"assistant_model": "draft"},
    "prompt_lookup": {"prompt_lookup_num_tokens": 2},
    "contrastive": {"penalty_alpha": 0.6, "top_k": 4},
    "dola": {"dola_layers": "high"},
    "group_beam": {"num_beams": 2, "num_beam_groups": 2, "diversity_penalty": 0.5},
    "constrained_beam": {"num_beams": 2, "force_words_ids": [[9]]},
}

#: Values that go anywhere: wrong types, tensors, extremes, NaN, out-of-vocabulary ids.
NONSENSE = st.sampled_from([
    None, True, False, 0, -1, 1, 3, 10 ** 12, -10 ** 12, 0.0, 0.5, 2.5, -0.5, math.nan, math.inf, -math.inf,
    "", "abc", "3", b"x", [], [1, 2], [[1]], [[]], [-1], [VOCAB + 88], [[VOCAB + 88]], {}, {"a": 1}, (1,),
    {(3,): 1.0}, {3: 1.0}, object(), print,
    "tensor:3", "tensor:[1,2]", "tensor:nan", "tensor:2.5", "tensor:[[1]]",
])

#: Knobs whose value multiplies the work (rows, draft tokens, lengths): no huge numbers for them.
BOUNDED = {"num_beams": st.integers(1, 3), "num_return_sequences": st.integers(1, 3),
           "num_assistant_tokens": st.integers(1, 4), "prompt_lookup_num_tokens": st.integers(1, 4),
           "max_new_tokens": st.integers(1, 4), "max_length": st.integers(1, 10),
           "max_matching_ngram_size": st.integers(1, 3), "max_time": st.floats(0.5, 5.0)}


def _huge(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 10 ** 12


def good_value(name: str):
    """A plausible value for knob ``name`` (often valid, sometimes just outside its range)."""
    if name in BOUNDED:
        return BOUNDED[name]
    knob = KNOBS.get(name)
    kind = getattr(knob, "type", None)
    if kind is int:
        return st.integers(-2, 6)
    if kind is float:
        return st.floats(-1.5, 3.0, allow_nan=False)
    if kind is bool:
        return st.booleans()
    if name.endswith("_token_id"):
        return st.one_of(st.integers(0, VOCAB - 1), st.lists(st.integers(0, VOCAB - 1), max_size=3))
    if name.endswith("_tokens") or name.endswith("_ids"):
        return st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=2), min_size=1, max_size=2)
    return st.none()


def value_for(name: str):
    nonsense = NONSENSE.filter(lambda v: not _huge(v)) if name in BOUNDED else NONSENSE
    if name == "max_new_tokens":   # never unset: an unbounded length on a model that rarely says eos would hang
        nonsense = nonsense.filter(lambda v: v is not None and v is not False)
    return st.one_of(good_value(name), nonsense)


class RaisingProcessor:
    def __call__(self, input_ids, scores):
        return scores


CALL_ARGUMENTS = {
    "logits_processor": st.sampled_from([None, [], [RaisingProcessor()], [5], "x", RaisingProcessor()]),
    "stopping_criteria": st.sampled_from([None, [], [5], "x", [lambda ids, scores: False]]),
    "streamer": st.sampled_from([None, 5, "x", object()]),
    "seed": st.one_of(st.integers(-3, 2 ** 64), NONSENSE),
    "order": st.sampled_from([None, "hf", "vllm", "llama.cpp", "mlx", "nope", ["temperature", "top_k"], 3]),
    "prefix_allowed_tokens_fn": st.sampled_from([None, 3, lambda b, ids: [5, 6]]),
    "negative_prompt_ids": st.sampled_from([None, "tensor:[[1]]", "tensor:3", 4]),
    "output_beam_tree": st.sampled_from([False, True, 3, None]),
    "generation_config": st.sampled_from([None, 5, "greedy", {}, {"max_new_tokens": 2}, {"top_k": -1},
                                          {"nonsense": 1}]),
    "attention_mask": st.sampled_from([None, "mask:ones", "mask:float", "mask:2", "mask:short", "tensor:3", [[1]]]),
    "input_ids": st.sampled_from(["ids", "ids", "ids", "ids:padded", "tensor:3", "tensor:2.5", "tensor:[[1]]",
                                  [[5, 6]], "ids:oov", "ids:empty", None]),
    "max_new_tokens_typo": st.just(2),
    "temprature": st.just(0.5),
}

KEYWORDS = sorted(set(KNOBS) - set(CALL_ARGUMENTS) - {"strategy", "custom_generate", "inputs", "assistant_model",
                                                         "tokenizer", "streamer", "max_length"})


def materialise(value, ids):
    """Turn the string placeholders above into tensors (hypothesis shows the placeholder, not the tensor)."""
    if not isinstance(value, str) or ":" not in value:
        return value
    kind, text = value.split(":", 1)
    if kind == "tensor":
        return torch.tensor(float("nan") if text == "nan" else eval(text))  # noqa: S307 (fixed literals above)
    if kind == "mask":
        return {"ones": torch.ones_like(ids), "float": torch.ones_like(ids, dtype=torch.float),
                "2": torch.full_like(ids, 2), "short": torch.ones_like(ids[:, :1])}[text]
    if kind == "ids":
        return {"padded": torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]]), "oov": torch.tensor([[5, VOCAB]]),
                "empty": torch.zeros(1, 0, dtype=torch.long)}[text]
    return value


@st.composite
def calls(draw):
    arch = draw(st.sampled_from(ARCHS))
    strategy = draw(st.sampled_from(sorted(STRATEGIES)))
    kwargs = dict(STRATEGIES[strategy])
    kwargs["max_new_tokens"] = draw(st.integers(1, 4))
    names = draw(st.lists(st.sampled_from(KEYWORDS + sorted(CALL_ARGUMENTS)), max_size=5, unique=True))
    for name in names:
        kwargs[name] = draw(CALL_ARGUMENTS[name] if name in CALL_ARGUMENTS else value_for(name))
    return arch, strategy, kwargs


def raised_by_decoding(error: BaseException) -> bool:
    """The innermost frame of the traceback is in the decoding package (not torch or transformers)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(PACKAGE + os.sep)


def check_output(out, prompt: torch.Tensor) -> None:
    sequences = out.sequences if is_output(out) else out
    assert isinstance(sequences, torch.Tensor) and sequences.dtype == torch.long and sequences.dim() == 2, out
    if not isinstance(prompt, torch.Tensor):   # input_ids=None: started from bos
        prompt = sequences[:1, :1]
    assert sequences.shape[0] % prompt.shape[0] == 0 and sequences.shape[1] > prompt.shape[1]
    assert int(sequences.min()) >= 0 and int(sequences.max()) < VOCAB
    rows = sequences.shape[0] // prompt.shape[0]
    assert torch.equal(sequences[:, :prompt.shape[1]], prompt.repeat_interleave(rows, dim=0))


def run_one(arch: str, kwargs: dict) -> None:
    """One fuzzed call: a valid output or a documented error from decoding itself, else AssertionError."""
    model = tiny_model(arch)
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    kwargs = {name: materialise(value, ids) for name, value in kwargs.items()}
    if kwargs.get("assistant_model") == "draft":
        kwargs["assistant_model"] = tiny_model(arch, seed=1)
    prompt = kwargs.pop("input_ids", ids)
    if "max_new_tokens_typo" in kwargs:
        kwargs["max_new_token"] = kwargs.pop("max_new_tokens_typo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = decoding.generate(model, prompt, **kwargs)
    except NonFiniteLogitsError as error:   # settings that overflow the scores (a tiny temperature, a huge bias)
        assert "processed scores" in str(error), f"a healthy model gave non-finite logits: {error}"
        return
    except GenerationInterrupted as error:
        raise AssertionError(f"the loop failed mid-generation: {error!r}") from error
    except (ValueError, TypeError, NotImplementedError, ConstraintsNotMet) as error:
        assert raised_by_decoding(error), f"{type(error).__name__} from outside decoding: {error}"
        assert str(error), "an error without a message"
        return
    check_output(out, prompt)


_settings = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
                     suppress_health_check=list(HealthCheck))


def _seeded(test):
    return seed(int(SEED))(test) if SEED is not None else test


@_seeded
@_settings
@given(calls())
def test_generate_never_crashes(call):
    arch, _, kwargs = call
    run_one(arch, kwargs)
