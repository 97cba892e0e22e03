"""``decoding.pipeline`` and the order presets: each engine's order, reordering rules, invariants."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from decoding.processors import LogitsProcessorList
from decoding.processors.orders import ORDERS, processor_name, reorder
from decoding.processors.warpers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper
from tests.models import PAD, prompts, tiny_model

# For each preset: knobs whose processors that engine names, so the whole pipeline follows its order.
ENGINE_KNOBS = {
    "hf": dict(repetition_penalty=1.2, no_repeat_ngram_size=3, bad_words_ids=[[9]], min_new_tokens=2,
               suppress_tokens=[11], presence_penalty=0.5, frequency_penalty=0.5, dry_multiplier=0.5,
               logit_bias={5: 1.0}, allowed_token_ids=list(range(3, 400)), temperature=0.7, top_k=40, top_p=0.9,
               min_p=0.05, typical_p=0.9, epsilon_cutoff=1e-4, eta_cutoff=1e-4, top_n_sigma=2.0,
               xtc_probability=0.3, mirostat_tau=4.0, renormalize_logits=True),
    "vllm": dict(allowed_token_ids=list(range(3, 400)), bad_words_ids=[[9]], min_new_tokens=2, logit_bias={5: 1.0},
                 repetition_penalty=1.2, frequency_penalty=0.5, presence_penalty=0.5, temperature=0.7,
                 min_p=0.05, top_k=40, top_p=0.9, top_n_sigma=2.0, xtc_probability=0.3, mirostat_tau=4.0),
    "llama.cpp": dict(logit_bias={5: 1.0}, repetition_penalty=1.2, frequency_penalty=0.5, presence_penalty=0.5,
                      dry_multiplier=0.5, top_n_sigma=2.0, top_k=40, typical_p=0.9, top_p=0.9, min_p=0.05,
                      xtc_probability=0.3, temperature=0.7, mirostat_tau=4.0),
    "mlx": dict(logit_bias={5: 1.0}, repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.5,
                top_p=0.9, min_p=0.05, xtc_probability=0.3, top_k=40, temperature=0.7, top_n_sigma=2.0,
                mirostat_tau=4.0, renormalize_logits=True),
}


def built(order, **knobs):
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    return decoding.pipeline(model, ids, attention_mask=mask, do_sample=True, eos_token_id=2, order=order, **knobs)


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_each_preset_puts_the_processors_in_the_engines_order(order):
    names = [processor_name(p) for p in built(order, **ENGINE_KNOBS[order])]
    assert len(names) == len(set(names)) >= 10
    assert all(name in ORDERS[order] for name in names)
    assert names == [name for name in ORDERS[order] if name in names]


def test_the_engines_differ_where_their_documentation_says():
    def position(order, name):
        return [processor_name(p) for p in built(order, **ENGINE_KNOBS["llama.cpp"])].index(name)

    for order in ("hf", "vllm"):     # temperature before truncation
        assert position(order, "temperature") < position(order, "top_k")
    for order in ("llama.cpp", "mlx"):  # temperature last
        assert position(order, "temperature") > position(order, "min_p") > position(order, "top_p")
    assert position("vllm", "min_p") < position("vllm", "top_k")      # min-p before top-k/top-p in vLLM only
    assert position("hf", "min_p") > position("hf", "top_k")
    assert position("llama.cpp", "logit_bias") == 0 and position("mlx", "logit_bias") == 0
    assert position("llama.cpp", "top_k") < position("llama.cpp", "top_p")  # llama.cpp: top-k first
    assert position("mlx", "top_k") > position("mlx", "xtc_probability")     # mlx-lm: top-k last of its chain


def test_dynatemp_takes_the_place_of_temperature_in_every_preset():
    for order in ORDERS:
        names = [processor_name(p) for p in built(order, temperature=0.7, dynatemp_range=0.3, top_k=40, min_p=0.1)]
        assert "temperature" not in names
        assert (names.index("dynatemp_range") < names.index("top_k")) == (order in ("hf", "vllm"))


def test_hf_preset_is_the_build_order():
    pipeline = built("hf", **ENGINE_KNOBS["hf"])
    again = reorder(pipeline, ORDERS["hf"])
    assert [id(p) for p in again] == [id(p) for p in pipeline]
    assert [id(p) for p in reorder(pipeline, "hf")] == [id(p) for p in pipeline]


class Marker:
    """A user processor (no ``name``): it must travel with the named processor before it."""

    def __call__(self, input_ids, scores):
        return scores


@given(order=st.sampled_from(sorted(ORDERS)), position=st.integers(0, 6))
def test_unnamed_processors_travel_with_the_named_processor_before_them(order, position):
    pipeline = list(built("hf", repetition_penalty=1.2, logit_bias={5: 1.0}, temperature=0.7, top_k=40,
                          min_p=0.1, top_p=0.9))
    position = min(position, len(pipeline))
    marker = Marker()
    pipeline.insert(position, marker)
    result = reorder(pipeline, order)
    assert sorted(map(id, result)) == sorted(map(id, pipeline))
    index = [id(p) for p in result].index(id(marker))
    if position == 0:
        assert index == 0
    else:
        assert result[index - 1] is pipeline[position - 1]


def test_a_custom_list_of_names_is_an_order():
    pipeline = built("hf", temperature=0.7, top_k=40, min_p=0.1)
    assert [processor_name(p) for p in reorder(pipeline, ["min_p", "top_k", "temperature"])] == \
        ["min_p", "top_k", "temperature"]


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31 - 1), temperature=st.floats(1.2, 4.0), min_p=st.floats(0.02, 0.5))
def test_temperature_first_or_last_changes_what_min_p_keeps(seed, temperature, min_p):
    """Temperature > 1 before min-p (hf, vLLM) keeps a superset of what min-p before temperature keeps."""
    scores = torch.randn(3, 64, generator=torch.Generator().manual_seed(seed)) * 3
    first = LogitsProcessorList([TemperatureLogitsWarper(temperature), MinPLogitsWarper(min_p)])
    last = reorder(first, "llama.cpp")
    assert [processor_name(p) for p in last] == ["min_p", "temperature"]
    kept_first, kept_last = torch.isfinite(first(None, scores)), torch.isfinite(last(None, scores))
    assert bool((kept_first | ~kept_last).all())
    gap = scores - scores.max(-1, keepdim=True).values
    only_first = (gap >= temperature * math.log(min_p) + 1e-4) & (gap < math.log(min_p) - 1e-4)
    assert bool((kept_first & ~kept_last)[only_first].all())


def test_temperature_first_or_last_changes_the_tokens():
    model = tiny_model("llama")
    ids, mask = prompts(4, 2)
    knobs = dict(do_sample=True, temperature=2.0, top_k=20, min_p=0.2, max_new_tokens=10, eos_token_id=None,
                 pad_token_id=PAD, seed=[1, 2, 3, 4])
    outs = {order: decoding.generate(model, ids, attention_mask=mask, order=order, **knobs) for order in ORDERS}
    assert not torch.equal(outs["hf"], outs["llama.cpp"])
    assert torch.equal(outs["llama.cpp"], outs["mlx"])   # top-k and min-p commute; temperature last in both


@given(scores=st.integers(0, 2**31 - 1).map(lambda s: torch.randn(4, 50, generator=torch.Generator().manual_seed(s)) * 4),
       order=st.sampled_from(sorted(ORDERS)), temperature=st.floats(0.1, 5.0), top_k=st.integers(1, 50),
       min_p=st.floats(0.0, 1.0), top_p=st.floats(0.01, 1.0))
def test_temperature_and_truncation_keep_the_argmax_in_every_order(scores, order, temperature, top_k, min_p, top_p):
    pipeline = built(order, temperature=temperature, top_k=top_k, min_p=min_p, top_p=top_p)
    assert torch.equal(pipeline(None, scores).argmax(-1), scores.argmax(-1))
    assert torch.equal(TemperatureLogitsWarper(temperature)(None, scores).argmax(-1), scores.argmax(-1))


@settings(max_examples=6)
@given(order=st.sampled_from(sorted(ORDERS)), seed=st.integers(0, 1000))
def test_pipeline_is_what_generate_runs(order, seed):
    """Replaying decoding.pipeline(...) over generate's own logits gives generate's scores, step by step."""
    model = tiny_model("llama")
    ids, mask = prompts(2, seed)
    knobs = dict(do_sample=True, temperature=0.8, top_k=30, min_p=0.02, presence_penalty=0.4, dry_multiplier=0.5,
                 xtc_probability=0.5, xtc_threshold=0.05, mirostat_tau=4.0, max_new_tokens=6, eos_token_id=None,
                 pad_token_id=PAD, seed=[seed, seed + 1], order=order)
    out = decoding.generate(model, ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True,
                            output_logits=True, **knobs)
    pipeline = decoding.pipeline(model, ids, attention_mask=mask, **knobs)
    pipeline.reset()
    for step, (logits, scores) in enumerate(zip(out.logits, out.scores)):
        length = ids.shape[1] + step
        assert torch.equal(pipeline(out.sequences[:, :length], logits), scores)
        pipeline.accept(out.sequences[:, length])


def test_generate_without_order_is_the_hf_order():
    model = tiny_model("llama")
    ids, mask = prompts(2, 4)
    knobs = dict(do_sample=True, temperature=0.6, top_k=10, min_p=0.1, max_new_tokens=6, pad_token_id=PAD, seed=3)
    assert torch.equal(decoding.generate(model, ids, attention_mask=mask, **knobs),
                       decoding.generate(model, ids, attention_mask=mask, order="hf", **knobs))
