"""Caches against model.generate: continuing a cache (past_key_values), cache_implementation, max_cache_len.

Every equivalence here runs the reference and ours on deep copies of one cache (both mutate theirs in
place) and compares sequences, raw logits bit for bit, and what is left in the returned caches.
"""

import copy

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding import caches
from decoding.versions import CACHE_KEYWORD
from tests.models import ARCHITECTURES, PAD, prompts, tiny_model

ARCHS = sorted(ARCHITECTURES)
SLIDING = ["mistral", "gemma2"]   # sliding_window=8: their DynamicCache has sliding-window layers


def run_both(model, ids, seed, cache=None, **kwargs):
    """The reference and ours, each after ``torch.manual_seed(seed)`` and on its own copy of ``cache``."""
    outs = []
    for fn in (model.generate, lambda *a, **k: decoding.generate(model, *a, **k)):
        extra = {"past_key_values": copy.deepcopy(cache)} if cache is not None else {}
        torch.manual_seed(seed)
        outs.append(fn(ids, pad_token_id=PAD, return_dict_in_generate=True, output_logits=True, **extra, **kwargs))
    return outs


def assert_bit_equal(reference, ours):
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    assert len(reference.logits) == len(ours.logits)
    for r, o in zip(reference.logits, ours.logits):
        assert torch.equal(r, o)


def assert_same_cache(reference, ours):
    r, o = reference.past_key_values, ours.past_key_values
    assert type(r) is type(o)
    assert r.get_seq_length() == o.get_seq_length()
    for lr, lo in zip(r.layers, o.layers):
        assert torch.equal(lr.keys, lo.keys) and torch.equal(lr.values, lo.values)


def a_first_turn(model, batch, seed, new=4):
    """A first call (ours) and the pieces of a second turn: ``(first output, full ids, full mask, new ids)``.

    The second turn appends three random tokens to each row; ``new ids`` are what the cache lacks (the
    first call's last token, never fed, and the three appended ones).
    """
    ids, mask = prompts(batch, seed)
    torch.manual_seed(seed)
    first = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=new, pad_token_id=PAD,
                              do_sample=True, return_dict_in_generate=True)
    appended = torch.randint(3, 500, (batch, 3), generator=torch.Generator().manual_seed(seed))
    whole = torch.cat([first.sequences, appended], dim=1)
    whole_mask = torch.cat([mask, torch.ones(batch, new + 3, dtype=torch.long)], dim=1)
    return first, whole, whole_mask, whole[:, first.past_key_values.get_seq_length() - whole.shape[1]:]


# --- continuing from a cache ---------------------------------------------------------------------------------------

@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       given_as=st.sampled_from(["whole", "new tokens", "whole without mask"]), do_sample=st.booleans(),
       steps=st.integers(1, 8))
def test_continuing_a_returned_cache_matches_the_reference(arch, batch, seed, given_as, do_sample, steps):
    model = tiny_model(arch)
    first, whole, whole_mask, new = a_first_turn(model, batch, seed)
    ids = new if given_as == "new tokens" else whole
    mask = {} if given_as == "whole without mask" else {"attention_mask": whole_mask}
    reference, ours = run_both(model, ids, seed, first.past_key_values, max_new_tokens=steps, do_sample=do_sample,
                               **mask)
    assert_bit_equal(reference, ours)
    assert_same_cache(reference, ours)
    assert ours.sequences.shape[1] == ids.shape[1] + steps   # the reference's: what was given, then the new tokens


@pytest.mark.parametrize("arch", ["llama", *SLIDING])
def test_a_dynamic_cache_filled_by_the_callers_own_forward(arch):
    """A DynamicCache (sliding-window layers for mistral and gemma2) filled past the window by model(...)."""
    model = tiny_model(arch)
    ids = torch.randint(3, 500, (1, 11), generator=torch.Generator().manual_seed(1))
    cache = transformers.DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :10], past_key_values=cache, use_cache=True)
    if arch in SLIDING:
        assert any(getattr(layer, "is_sliding", False) for layer in cache.layers)
    reference, ours = run_both(model, ids, 0, cache, max_new_tokens=10)
    assert_bit_equal(reference, ours)
    assert_same_cache(reference, ours)


@pytest.mark.parametrize("kwargs", [dict(num_beams=2), dict(num_beams=2, do_sample=True),
                                    dict(do_sample=True, num_return_sequences=2),
                                    dict(num_beams=3, num_return_sequences=2, output_scores=True)])
def test_beams_and_several_sequences_continue_an_expanded_cache(kwargs):
    model = tiny_model("qwen2")
    first, whole, whole_mask, _ = a_first_turn(model, 2, 5)
    cache = copy.deepcopy(first.past_key_values)
    cache.batch_repeat_interleave(max(kwargs.get("num_beams", 1), kwargs.get("num_return_sequences", 1)))
    reference, ours = run_both(model, whole, 5, cache, attention_mask=whole_mask, max_new_tokens=6, **kwargs)
    assert_bit_equal(reference, ours)


def test_the_cache_of_the_previous_call_chains_over_several_turns():
    """Three turns, each continuing the cache the previous one returned, equal to recomputing from scratch."""
    model = tiny_model("llama")
    ids = torch.randint(3, 500, (1, 5), generator=torch.Generator().manual_seed(2))
    cache, sequence = None, ids
    for turn in range(3):
        out = decoding.generate(model, sequence, past_key_values=cache, max_new_tokens=4, pad_token_id=PAD,
                                return_dict_in_generate=True)
        scratch = model.generate(sequence, max_new_tokens=4, pad_token_id=PAD)
        assert torch.equal(out.sequences, scratch)
        cache = out.past_key_values
        sequence = torch.cat([out.sequences, torch.tensor([[7 + turn, 9]])], dim=1)


def test_cache_is_another_name_for_past_key_values():
    """transformers 5.24 renamed the keyword to ``cache``; either name works here, with every release."""
    model = tiny_model("llama")
    first, whole, whole_mask, _ = a_first_turn(model, 1, 4)
    by_old = decoding.generate(model, whole, past_key_values=copy.deepcopy(first.past_key_values), max_new_tokens=4)
    by_new = decoding.generate(model, whole, cache=copy.deepcopy(first.past_key_values), max_new_tokens=4)
    assert torch.equal(by_old, by_new) and torch.equal(by_old, model.generate(whole, max_new_tokens=4,
                                                                              pad_token_id=PAD))
    with pytest.raises(ValueError, match="two names of one argument"):
        decoding.generate(model, whole, cache=first.past_key_values, past_key_values=first.past_key_values)


def test_continuation_refusals_say_what_to_pass():
    model = tiny_model("llama")
    first, whole, whole_mask, new = a_first_turn(model, 2, 3)
    cache = first.past_key_values
    with pytest.raises(ValueError, match="batch_repeat_interleave\\(2\\)"):
        decoding.generate(model, whole, attention_mask=whole_mask, past_key_values=copy.deepcopy(cache),
                          num_beams=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="whole sequence"):          # new tokens without the whole mask
        decoding.generate(model, new, past_key_values=copy.deepcopy(cache), max_new_tokens=2, pad_token_id=PAD)
    with pytest.raises(ValueError, match="mask of the whole sequence"):
        decoding.generate(model, new, attention_mask=whole_mask[:, 1:], past_key_values=copy.deepcopy(cache),
                          max_new_tokens=2)
    with pytest.raises(ValueError, match="tuple"):
        decoding.generate(model, whole, past_key_values=((torch.zeros(1),),), max_new_tokens=2)
    with pytest.raises(ValueError, match="only one of them"):
        decoding.generate(model, whole, past_key_values=copy.deepcopy(cache), cache_implementation="static",
                          max_new_tokens=2)
    with pytest.raises(ValueError, match="use_cache=True"):
        decoding.generate(model, whole, past_key_values=copy.deepcopy(cache), use_cache=False, max_new_tokens=2)
    one = decoding.generate(model, whole[:1], max_new_tokens=2, pad_token_id=PAD, return_dict_in_generate=True)
    longer = torch.cat([one.sequences, torch.tensor([[5, 6]])], dim=1)
    with pytest.raises(NotImplementedError, match="speculative decoding does not continue"):
        decoding.generate(model, longer, past_key_values=one.past_key_values, prompt_lookup_num_tokens=2,
                          max_new_tokens=2)


# --- cache_implementation ------------------------------------------------------------------------------------------

@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       strategy=st.sampled_from([{}, {"do_sample": True}, {"num_beams": 2}, {"num_beams": 2, "do_sample": True},
                                 {"do_sample": True, "num_return_sequences": 2}]),
       steps=st.integers(1, 10), name=st.sampled_from(["static", "sliding_window", "hybrid_chunked"]))
def test_the_static_cache_matches_the_references_bit_for_bit(arch, batch, seed, strategy, steps, name):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    reference, ours = run_both(model, ids, seed, attention_mask=mask, max_new_tokens=steps,
                               cache_implementation=name, **strategy)
    assert_bit_equal(reference, ours)
    assert isinstance(ours.past_key_values, transformers.StaticCache)
    assert_same_cache(reference, ours)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_static_decode_steps_have_one_shape(arch):
    """Every decode step feeds the same shapes (ids, positions, a 4-D mask over the whole static cache)."""
    model = tiny_model(arch)
    ids, mask = prompts(2, 4)
    shapes = []

    def record(module, args, kwargs):
        masks = kwargs.get("attention_mask")
        masks = masks if isinstance(masks, dict) else {"mask": masks}
        shapes.append((tuple(kwargs["input_ids"].shape), tuple(kwargs["position_ids"].shape),
                       tuple((k, tuple(v.shape) if v is not None else None) for k, v in sorted(masks.items()))))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=PAD,
                                cache_implementation="static", return_dict_in_generate=True)
    finally:
        handle.remove()
    steps = shapes[1:]
    assert len(steps) == 7 and len(set(steps)) == 1, shapes
    cache_length = ids.shape[1] + 8 - 1
    assert out.past_key_values.get_max_length() >= cache_length
    assert steps[0][0] == (2, 1)


def test_static_gives_the_tokens_of_the_default_cache():
    """The static cache changes how attention is computed, not which tokens greedy search picks here."""
    for arch in ARCHS:
        model = tiny_model(arch)
        ids, mask = prompts(3, 11)
        plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=12, pad_token_id=PAD)
        static = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=12, pad_token_id=PAD,
                                   cache_implementation="static")
        assert torch.equal(plain, static), arch


def test_max_cache_len_sizes_the_static_cache_as_the_reference():
    model = copy.deepcopy(tiny_model("llama"))
    model.__dict__.pop("_previous_max_cache_length", None)   # the size earlier tests' static calls left on the model
    ids, mask = prompts(2, 6)
    for max_cache_len in (None, 40, 10):
        reference, ours = run_both(model, ids, 0, attention_mask=mask, max_new_tokens=5,
                                   cache_implementation="static", max_cache_len=max_cache_len)
        assert_bit_equal(reference, ours)
        assert ours.past_key_values.get_max_length() == reference.past_key_values.get_max_length()
    assert ours.past_key_values.get_max_length() == 40   # never shrinks below the model's previous static cache


def test_a_static_cache_continues_when_it_is_large_enough():
    model = copy.deepcopy(tiny_model("llama"))
    ids, mask = prompts(2, 7)
    first = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, pad_token_id=PAD,
                              cache_implementation="static", max_cache_len=64, return_dict_in_generate=True)
    whole = torch.cat([first.sequences, torch.tensor([[11, 12], [13, 14]])], dim=1)
    whole_mask = torch.cat([mask, torch.ones(2, 5, dtype=torch.long)], dim=1)
    reference, ours = run_both(model, whole, 0, first.past_key_values, attention_mask=whole_mask, max_new_tokens=6)
    assert_bit_equal(reference, ours)
    with pytest.raises(ValueError, match="static cache holds 64 positions.*needs 70"):   # the reference: IndexError
        decoding.generate(model, whole, attention_mask=whole_mask, past_key_values=first.past_key_values,
                          max_new_tokens=57)


@pytest.mark.parametrize("name", ["dynamic", "hybrid"])
def test_dynamic_and_hybrid_give_the_default_cache(name):
    model = tiny_model("gemma2")
    ids, mask = prompts(2, 8)
    reference, ours = run_both(model, ids, 0, attention_mask=mask, max_new_tokens=6, cache_implementation=name)
    assert_bit_equal(reference, ours)
    assert type(ours.past_key_values) is transformers.DynamicCache


def test_a_checkpoints_static_cache_implementation_is_followed():
    model = copy.deepcopy(tiny_model("llama"))
    model.generation_config.cache_implementation = "static"
    ids, mask = prompts(2, 9)
    reference, ours = run_both(model, ids, 0, attention_mask=mask, max_new_tokens=5)
    assert_bit_equal(reference, ours)
    assert isinstance(ours.past_key_values, transformers.StaticCache)


def test_the_fp8_quantized_cache_matches_the_reference():
    model = tiny_model("llama")
    ids, mask = prompts(2, 10)
    config = {"backend": "fp8"}
    reference, ours = run_both(model, ids, 0, attention_mask=mask, max_new_tokens=8,
                               cache_implementation="quantized", cache_config=config)
    assert_bit_equal(reference, ours)
    assert isinstance(ours.past_key_values, transformers.QuantizedCache)
    assert config == {"backend": "fp8"}   # the caller's dict is not consumed


@pytest.mark.parametrize("backend, package", [("quanto", "optimum-quanto"), ("hqq", "hqq")])
def test_a_quantized_backend_that_is_not_installed_is_refused_with_the_install_line(backend, package):
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    config = {"backend": backend}
    if caches._installed(caches.QUANTIZED_BACKENDS[backend][0]):   # installed here: it runs, as the reference
        reference, ours = run_both(model, ids, 0, attention_mask=mask, max_new_tokens=4,
                                   cache_implementation="quantized", cache_config=config)
        assert_bit_equal(reference, ours)
        return
    with pytest.raises(NotImplementedError, match=f"pip install {package}"):
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="quantized",
                          cache_config=config)


@pytest.mark.parametrize("name, error, says", [
    ("offloaded", NotImplementedError, "on the CPU.*'dynamic'"),
    ("offloaded_static", NotImplementedError, "on the CPU.*'static'"),
    ("paged", NotImplementedError, "continuous batching"),
    ("dynamc", ValueError, "cache_implementation.*must be one of"),
])
def test_names_that_cannot_run_here_are_refused_by_name(name, error, says):
    model = tiny_model("llama")
    with pytest.raises(error, match=says):
        decoding.generate(model, prompts(1, 0)[0], max_new_tokens=2, cache_implementation=name)


def test_speculation_refuses_a_static_cache():
    """As the reference before 5.24 (5.24 runs it: a deliberate difference there)."""
    from packaging.version import Version

    from decoding.versions import INSTALLED

    model = tiny_model("llama")
    ids = prompts(1, 0)[0]
    if INSTALLED < Version("5.24"):
        with pytest.raises(ValueError, match="Static cache"):
                model.generate(ids, max_new_tokens=2, cache_implementation="static", prompt_lookup_num_tokens=2,
                           pad_token_id=PAD)
    with pytest.raises(ValueError, match="static cache"):
        decoding.generate(model, ids, max_new_tokens=2, cache_implementation="static", prompt_lookup_num_tokens=2)


def test_the_builder_sizes_and_names():
    model = copy.deepcopy(tiny_model("llama"))
    vars(model).pop("_previous_max_cache_length", None)   # a fresh model: no previous static cache
    cache = caches.build_cache(model, "static", max_length=20)
    assert isinstance(cache, transformers.StaticCache) and cache.get_max_length() == 19
    assert caches.is_static(cache) and not caches.is_static(caches.build_cache(model, None, 20))
    assert caches.past_length(None) == 0
    assert set(caches.IMPLEMENTATIONS) | {"paged"} == set(
        transformers.generation.configuration_utils.ALL_CACHE_IMPLEMENTATIONS) | {"paged"}


# --- multi-turn chat ------------------------------------------------------------------------------------------------

TURNS = ["What is the capital of France?", "And of Italy?", "Which of the two is larger?"]


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=12), dict(max_new_tokens=10, do_sample=True, seed=3)])
def test_chat_reuses_the_cache_between_turns_with_the_tokens_of_recomputing(builtin, kwargs):
    model, tokenizer = builtin
    cached, scratch, chat_cache = [], [], decoding.ChatCache()
    for question in TURNS:
        cached.append({"role": "user", "content": question})
        scratch.append({"role": "user", "content": question})
        prompt_length = decoding.conversation.chat_prompt(tokenizer, cached).input_ids.shape[1]
        answer = decoding.chat(model, tokenizer, cached, chat_cache=chat_cache, **kwargs)
        assert answer == decoding.chat(model, tokenizer, scratch, **kwargs)
        if len(cached) > 1:   # the previous prompt and answer come from the cache; only the rest is fed
            assert chat_cache.reused > 0 and chat_cache.fed == prompt_length - chat_cache.reused
            assert chat_cache.fed < 20
        cached.append({"role": "assistant", "content": answer})
        scratch.append({"role": "assistant", "content": answer})


def test_an_edited_history_reuses_only_the_shared_prefix(builtin):
    model, tokenizer = builtin
    chat_cache = decoding.ChatCache()
    first = decoding.chat(model, tokenizer, TURNS[0], chat_cache=chat_cache, max_new_tokens=8)
    other = [{"role": "user", "content": "What is the capital of Spain?"}]
    answer = decoding.chat(model, tokenizer, other, chat_cache=chat_cache, max_new_tokens=8)
    assert answer == decoding.chat(model, tokenizer, other, max_new_tokens=8) != first
    assert 0 < chat_cache.reused < decoding.conversation.chat_prompt(tokenizer, other).input_ids.shape[1]


def test_a_chat_cache_that_cannot_be_cropped_there_runs_the_turn_from_scratch():
    """A sliding-window layer past its window cannot go back before it: the turn runs without the cache."""
    from types import SimpleNamespace

    model = tiny_model("mistral")                       # sliding_window=8
    ids = torch.randint(3, 500, (1, 14), generator=torch.Generator().manual_seed(3))
    out = decoding.generate(model, ids, max_new_tokens=2, pad_token_id=PAD, return_dict_in_generate=True)
    chat_cache = decoding.ChatCache()
    chat_cache.keep(out)
    edited = torch.cat([ids[:, :4], torch.tensor([[9, 9, 9]])], dim=1)   # shares 4 tokens only
    assert chat_cache.take(edited) is None and chat_cache.reused == 0 and chat_cache.cache is None
    cache = copy.deepcopy(getattr(out, CACHE_KEYWORD))
    chat_cache.keep(SimpleNamespace(sequences=out.sequences, **{CACHE_KEYWORD: cache}))   # the installed name
    longer = torch.cat([out.sequences, torch.tensor([[9, 9]])], dim=1)   # everything shared: nothing to crop
    assert chat_cache.take(longer) is not None and chat_cache.reused == out.sequences.shape[1] - 1


def test_chat_with_beams_runs_from_scratch_and_empties_the_chat_cache(builtin):
    model, tokenizer = builtin
    chat_cache = decoding.ChatCache()
    decoding.chat(model, tokenizer, TURNS[0], chat_cache=chat_cache, max_new_tokens=4)
    assert chat_cache.cache is not None
    messages = [{"role": "user", "content": TURNS[0]}]
    assert decoding.chat(model, tokenizer, messages, chat_cache=chat_cache, max_new_tokens=6, num_beams=2) == \
        decoding.chat(model, tokenizer, messages, max_new_tokens=6, num_beams=2)
    assert chat_cache.cache is None and chat_cache.reused == 0


def test_cli_chat_reuses_the_cache_and_reset_clears_it(builtin_dir, monkeypatch, capsys):
    import io
    import sys

    from decoding import cli

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{TURNS[0]}\n{TURNS[1]}\n/reset\n{TURNS[1]}\n/exit\n"))
    status = cli.main(["chat", "--model", str(builtin_dir), "--max-new-tokens", "12", "--verbose"])
    out = capsys.readouterr()
    assert status == 0, out.err
    answers = out.out.strip().splitlines()
    assert answers[0] == "The capital of France is Paris." and "Rome" in answers[1]
    timings = [line for line in out.err.splitlines() if "new tokens in" in line]
    assert len(timings) == 3
    assert "reused from the previous turn's cache" in timings[1]
    assert "reused" not in timings[0] and "reused" not in timings[2]   # the first turn, and after /reset


def test_cli_generate_on_a_static_cache_compares_identical(builtin_dir, capsys):
    from decoding import cli

    status = cli.main(["generate", TURNS[0], "--model", str(builtin_dir), "--cache-implementation", "static",
                       "--max-new-tokens", "6", "--compare"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert out.out.strip().splitlines()[-1].startswith("compare with model.generate (seed 0): identical")


def test_a_chat_turn_given_its_own_cache_under_either_name_does_not_reuse_the_chat_cache():
    from decoding.conversation import reuses_cache

    model = tiny_model("llama")
    assert reuses_cache(model, {"max_new_tokens": 4})
    for name in ("past_key_values", "cache"):      # 5.24's name and the older one
        assert not reuses_cache(model, {"max_new_tokens": 4, name: transformers.DynamicCache(config=model.config)})
