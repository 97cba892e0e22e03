"""Every processor knob through decoding.generate against model.generate, token for token.

Padded batches of 1..4 on several architectures, greedy and sampling; processed scores within 1e-5
with ``-inf`` in the same places. Also: our built order equals the reference's own list (captured
with ``model.generate(custom_generate=...)``), user processors replace and append as the reference
merges them, guidance and watermarking end to end, and range errors before any forward pass.
"""


import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from decoding import processors as ours
from decoding.config import NOT_YET_IMPLEMENTED
from tests.models import EOS, PAD, VOCAB, prompts, tiny_model
from tests.reference import assert_same, both, emitted

ARCHS = ["llama", "gpt2", "qwen2", "gemma2", "opt", "gpt_neox"]
OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, pad_token_id=PAD)


def emitted_tokens(model, ids, mask, seed, steps, **kwargs):
    """Tokens a plain run emits (row 0 first), so that bans, biases and eos choices bite."""
    return emitted(model, ids, mask, seed, steps, PAD, **kwargs).flatten().tolist()


_ALLOWED = [[t for t in range(VOCAB) if t % 4 == r] for r in range(4)]


def allowed_tokens(batch_id, row_ids):
    """A deterministic prefix constraint: a quarter of the vocabulary, chosen by the last token."""
    return _ALLOWED[(int(row_ids[-1]) + batch_id) % 4]


knobs = st.fixed_dictionaries({}, optional={
    "repetition_penalty": st.sampled_from([0.7, 1.3, 2.0]),
    "encoder_repetition_penalty": st.sampled_from([0.8, 1.5]),
    "no_repeat_ngram_size": st.integers(1, 3),
    "encoder_no_repeat_ngram_size": st.integers(1, 3),
    "min_length": st.integers(1, 6),             # added to the prompt length below
    "min_new_tokens": st.integers(1, 4),
    "forced_eos_token_id": st.just(True),        # the eos ids of the call
    "exponential_decay_length_penalty": st.tuples(st.integers(0, 3), st.sampled_from([1.5, 3.0])),
    "remove_invalid_values": st.just(True),
    "renormalize_logits": st.just(True),
    "suppress_tokens": st.lists(st.integers(0, 40), min_size=1, max_size=3),        # indices into emitted
    "begin_suppress_tokens": st.lists(st.integers(0, 40), min_size=1, max_size=3),
    "bad_words_ids": st.lists(st.tuples(st.integers(0, 40), st.integers(1, 2)), min_size=1, max_size=3),
    "sequence_bias": st.lists(st.tuples(st.integers(0, 40), st.integers(1, 2), st.sampled_from([-4.0, 3.0])),
                              min_size=1, max_size=3),
    "prefix_allowed_tokens_fn": st.just(True),
})

warpers = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.6, 1.0, 1.4]),
    "top_k": st.sampled_from([0, 10, 50]),
    "top_p": st.sampled_from([0.8, 1.0]),
}, optional={
    "min_p": st.sampled_from([0.05, 0.2]),
    "typical_p": st.sampled_from([0.5, 0.9]),
    "epsilon_cutoff": st.sampled_from([3e-4, 0.02]),
    "eta_cutoff": st.sampled_from([3e-4, 0.02]),
    "top_h": st.sampled_from([0.4, 0.9]),
})


def realise(knobs, emitted, eos, prompt_length):
    """Turn drawn knob descriptions into generate keyword arguments over the emitted tokens."""
    kwargs = dict(knobs)
    pick = lambda i: emitted[i % len(emitted)]  # noqa: E731
    sequence = lambda i, n: emitted[i % len(emitted):][:n] or [pick(i)]  # noqa: E731
    if "min_length" in kwargs:
        kwargs["min_length"] += prompt_length
    if "exponential_decay_length_penalty" in kwargs:
        # both libraries overflow (nan scores) when the decay grows an eos score of finfo.min
        kwargs.pop("remove_invalid_values", None)
    if kwargs.pop("forced_eos_token_id", None):
        kwargs["forced_eos_token_id"] = eos
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        if name in kwargs:  # never every forced eos (the reference refuses that too)
            kwargs[name] = sorted({pick(i) for i in kwargs[name]} - set(eos))
            if not kwargs[name]:
                del kwargs[name]
    if "bad_words_ids" in kwargs:
        kwargs["bad_words_ids"] = [sequence(i, n) for i, n in kwargs["bad_words_ids"]]
        if all(len(word) == 1 and word[0] in eos for word in kwargs["bad_words_ids"]):
            del kwargs["bad_words_ids"]  # only eos: a no-op in the reference, refused by us (docs/processors.md)
    if "sequence_bias" in kwargs:
        kwargs["sequence_bias"] = {tuple(sequence(i, n)): b for i, n, b in kwargs["sequence_bias"]}
    if kwargs.pop("prefix_allowed_tokens_fn", None):
        kwargs["prefix_allowed_tokens_fn"] = allowed_tokens
    return kwargs


@settings(max_examples=150)
@given(arch=st.sampled_from(ARCHS), batch=st.integers(1, 4), seed=st.integers(0, 10_000), do_sample=st.booleans(),
       knobs=knobs, warpers=warpers, steps=st.integers(1, 8), eos_pick=st.integers(0, 40), nrs=st.integers(1, 2))
def test_every_knob_matches_reference(arch, batch, seed, do_sample, knobs, warpers, steps, eos_pick, nrs):
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    sampling = dict(do_sample=True, **warpers) if do_sample else {}
    nrs = nrs if do_sample else 1
    emitted = emitted_tokens(model, ids, mask, seed, steps + 2, **sampling, num_return_sequences=nrs)
    eos = sorted({emitted[eos_pick % len(emitted)], EOS})
    kwargs = realise(knobs, emitted, eos, ids.shape[1])
    reference, mine = both(model, ids, seed, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos,
                           num_return_sequences=nrs, **sampling, **kwargs, **OUTPUTS)
    assert_same(reference, mine)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "mistral", "gemma"])
def test_penalties_and_bans_on_more_architectures(arch):
    """The history processors read the padded prompt: check them on the remaining architectures."""
    model = tiny_model(arch)
    ids, mask = prompts(3, 7)
    emitted = emitted_tokens(model, ids, mask, 7, 6)
    for sampling in ({}, dict(do_sample=True, top_k=0, min_p=0.1, typical_p=0.9)):
        reference, mine = both(model, ids, 3, attention_mask=mask, max_new_tokens=6, repetition_penalty=1.5,
                               encoder_repetition_penalty=1.3, no_repeat_ngram_size=2,
                               bad_words_ids=[emitted[:2], [emitted[3]]], sequence_bias={(emitted[4],): 2.0},
                               min_new_tokens=2, eos_token_id=[emitted[1], EOS], **sampling, **OUTPUTS)
        assert_same(reference, mine)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_one_token_prompt_forced_bos_and_begin_suppression(arch):
    """forced_bos fires on a 1-token prompt; begin_suppress_tokens then acts one step later."""
    model = tiny_model(arch)
    ids = torch.tensor([[7], [9]])
    emitted = emitted_tokens(model, ids, None, 0, 4)
    for sampling in ({}, dict(do_sample=True)):
        reference, mine = both(model, ids, 1, max_new_tokens=4, forced_bos_token_id=5,
                               begin_suppress_tokens=emitted[1:3], suppress_tokens=[emitted[0]],
                               eos_token_id=EOS, **sampling, **OUTPUTS)
        assert_same(reference, mine)
        assert (mine.sequences[:, 1] == 5).all()


# --- the build order -----------------------------------------------------------------------------

ATTRIBUTES = ("min_length", "prompt_length_to_skip", "min_new_tokens", "max_length", "begin_index",
              "regulation_start", "regulation_factor", "penalty", "ngram_size", "bos_token_id", "eos_token_id",
              "prompt_ignore_length", "guidance_scale", "temperature", "top_h", "top_k", "top_p", "min_p",
              "mass", "epsilon", "min_tokens_to_keep", "greenlist_size", "bias", "hash_key", "ngram_len",
              "sequence_bias", "_num_beams")


def describe(processor):
    """Class name and the constructor state that decides behaviour, comparable across libraries."""
    state = {}
    for name in ATTRIBUTES:
        value = getattr(processor, name, None)
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if value is not None:
            state[name] = value
    return type(processor).__name__, state


def reference_pipeline(model, ids, **kwargs):
    captured = {}

    def capture(model, input_ids, logits_processor=None, **rest):
        captured["processors"] = list(logits_processor)
        return input_ids

    model.generate(ids, custom_generate=capture, **kwargs)
    return captured["processors"]


def our_pipeline(model, ids, **kwargs):
    """The processors ``decoding.generate`` would run: ``decoding.pipeline`` is built by the same code."""
    return list(decoding.pipeline(model, ids, **kwargs))


EVERYTHING = dict(
    guidance_scale=1.5, sequence_bias={(5,): 1.0, (6, 7): -2.0}, encoder_repetition_penalty=1.2,
    repetition_penalty=1.3, no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=3, bad_words_ids=[[8], [9, 10]],
    min_length=12, min_new_tokens=3, forced_bos_token_id=4, forced_eos_token_id=[EOS, 11],
    remove_invalid_values=True, exponential_decay_length_penalty=(2, 1.1), suppress_tokens=[12, 13],
    begin_suppress_tokens=[14], temperature=0.7, top_h=0.5, top_k=20, top_p=0.9, min_p=0.05, typical_p=0.9,
    epsilon_cutoff=0.001, eta_cutoff=0.001, renormalize_logits=True,
    watermarking_config=transformers.WatermarkingConfig(bias=1.5, seeding_scheme="selfhash"))


@pytest.mark.parametrize("case", ["sample", "greedy", "one_token_prompt", "unpadded", "synthid", "defaults",
                                  "our_user_classes"])
def test_built_order_equals_the_reference(case):
    model = tiny_model("llama")
    ids, mask = prompts(3, 2)
    kwargs = dict(EVERYTHING, do_sample=True, eos_token_id=[EOS, 11], max_new_tokens=6,
                  prefix_allowed_tokens_fn=allowed_tokens, attention_mask=mask,
                  logits_processor=[transformers.RepetitionPenaltyLogitsProcessor(2.0),
                                    transformers.TemperatureLogitsWarper(0.5)])
    if case == "greedy":
        kwargs["do_sample"] = False
    elif case == "one_token_prompt":
        ids, kwargs["attention_mask"] = ids[:, -1:], None
    elif case == "unpadded":
        ids, kwargs["attention_mask"] = ids[:, -2:], torch.ones_like(ids[:, -2:])
    elif case == "synthid":
        kwargs["watermarking_config"] = transformers.SynthIDTextWatermarkingConfig(ngram_len=3, keys=[1, 2])
    elif case == "defaults":
        kwargs = dict(do_sample=True, attention_mask=mask, max_new_tokens=6)
    reference = [describe(p) for p in reference_pipeline(model, ids, **kwargs)]
    if case == "our_user_classes":  # ours replace ours where the reference's replace the reference's
        kwargs["logits_processor"] = [ours.RepetitionPenaltyLogitsProcessor(2.0), ours.TemperatureLogitsWarper(0.5)]
    mine = [describe(p) for p in our_pipeline(model, ids, **kwargs)]
    assert mine == reference
    if case == "sample":
        assert len(mine) == 27  # every reference processor but SynthID, plus the user's temperature


# --- user processors -------------------------------------------------------------------------------

class BanToken:
    """A plain callable user processor (no class of either library): appended after #16."""

    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores):
        return scores.index_fill(1, torch.tensor([self.token]), -torch.inf)


@pytest.mark.parametrize("do_sample", [False, True])
def test_user_processors_replace_and_append(do_sample):
    model = tiny_model("qwen2")
    ids, mask = prompts(4, 9)
    emitted = emitted_tokens(model, ids, mask, 2, 6)
    common = dict(attention_mask=mask, max_new_tokens=6, repetition_penalty=1.2, min_new_tokens=2,
                  eos_token_id=[emitted[2], EOS], do_sample=do_sample, temperature=0.7, **OUTPUTS)
    theirs = [transformers.RepetitionPenaltyLogitsProcessor(1.8), BanToken(emitted[0]),
              transformers.TemperatureLogitsWarper(0.5)]
    torch.manual_seed(4)
    reference = model.generate(ids, logits_processor=theirs, **common)
    # the reference's classes in our loop
    torch.manual_seed(4)
    assert_same(reference, decoding.generate(model, ids, logits_processor=theirs, **common))
    # our classes in our loop replace ours exactly as the reference's replace the reference's
    mine = [ours.RepetitionPenaltyLogitsProcessor(1.8), BanToken(emitted[0]), ours.TemperatureLogitsWarper(0.5)]
    torch.manual_seed(4)
    assert_same(reference, decoding.generate(model, ids, logits_processor=mine, **common))
    assert not (reference.sequences[:, ids.shape[1]:] == emitted[0]).any()


def test_our_processors_inside_the_reference_loop():
    model = tiny_model("gpt2")
    ids, mask = prompts(2, 4)
    emitted = emitted_tokens(model, ids, mask, 0, 5)
    make = lambda lib: [lib.NoRepeatNGramLogitsProcessor(2), lib.SequenceBiasLogitsProcessor({(emitted[1],): 5.0}),  # noqa: E731
                        lib.MinPLogitsWarper(0.1), lib.TypicalLogitsWarper(0.8)]
    torch.manual_seed(1)
    reference = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True,
                               logits_processor=make(transformers), **OUTPUTS)
    torch.manual_seed(1)
    inside = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, logits_processor=make(ours),
                            **OUTPUTS)
    assert_same(reference, inside)


# --- guidance and watermarking -------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_classifier_free_guidance(arch):
    model = tiny_model(arch)
    ids, mask = prompts(2, 5)
    negative, negative_mask = prompts(2, 6, max_len=4)
    for scale, sampling, use_cache in ((1.5, {}, True), (3.0, dict(do_sample=True, top_k=0), True),
                                       (0.5, dict(do_sample=True, min_p=0.1), False)):
        for neg in ({}, dict(negative_prompt_ids=negative, negative_prompt_attention_mask=negative_mask)):
            reference, mine = both(model, ids, 2, attention_mask=mask, max_new_tokens=5, guidance_scale=scale,
                                   use_cache=use_cache, eos_token_id=EOS, **neg, **sampling, **OUTPUTS)
            assert_same(reference, mine)
    # several samples per prompt; the reference's own negative prompt is each row's last token then
    reference, mine = both(model, ids, 3, attention_mask=mask, max_new_tokens=5, guidance_scale=2.0,
                           num_return_sequences=2, do_sample=True, eos_token_id=EOS, **OUTPUTS)
    assert_same(reference, mine)


def test_guidance_negative_prompt_per_returned_sequence():
    """A negative prompt with one row per returned sequence is used as given, as the reference does."""
    model = tiny_model("qwen2")
    ids, mask = prompts(2, 3)
    negative, negative_mask = prompts(4, 4, max_len=3)
    reference, mine = both(model, ids, 0, attention_mask=mask, max_new_tokens=4, guidance_scale=1.7,
                           num_return_sequences=2, do_sample=True, negative_prompt_ids=negative,
                           negative_prompt_attention_mask=negative_mask, eos_token_id=EOS, **OUTPUTS)
    assert_same(reference, mine)
    # one row per prompt: the reference fails (shape mismatch); we repeat it for that prompt's rows
    torch.manual_seed(0)
    per_prompt = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, guidance_scale=1.7,
                                   num_return_sequences=2, do_sample=True, negative_prompt_ids=negative[::2],
                                   negative_prompt_attention_mask=negative_mask[::2], eos_token_id=EOS, **OUTPUTS)
    reference, _ = both(model, ids, 0, attention_mask=mask, max_new_tokens=4, guidance_scale=1.7,
                        num_return_sequences=2, do_sample=True, eos_token_id=EOS,
                        negative_prompt_ids=negative[::2].repeat_interleave(2, 0),
                        negative_prompt_attention_mask=negative_mask[::2].repeat_interleave(2, 0), **OUTPUTS)
    assert_same(reference, per_prompt)


WATERMARKS = [
    transformers.WatermarkingConfig(),
    transformers.WatermarkingConfig(greenlist_ratio=0.5, bias=3.0, hashing_key=7, seeding_scheme="selfhash",
                                    context_width=2),
    dict(bias=4.0, greenlist_ratio=0.1),
    transformers.SynthIDTextWatermarkingConfig(ngram_len=3, keys=[5, 9, 11], context_history_size=4),
    transformers.SynthIDTextWatermarkingConfig(ngram_len=2, keys=[3], skip_first_ngram_calls=True),
]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("config", WATERMARKS, ids=["lefthash", "selfhash", "dict", "synthid", "synthid-skip"])
def test_watermarking(config, arch):
    model = tiny_model(arch)
    ids, mask = prompts(3, 8)
    for sampling in ({}, dict(do_sample=True, top_k=0)):
        reference, mine = both(model, ids, 6, attention_mask=mask, max_new_tokens=6, watermarking_config=config,
                               eos_token_id=EOS, **sampling, **OUTPUTS)
        assert_same(reference, mine)


# --- errors before any forward pass ----------------------------------------------------------------

@pytest.fixture
def forbidden_forward():
    """The tiny llama, with a hook that fails the test if any forward pass runs."""
    model = tiny_model("llama")

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the error")

    handle = model.register_forward_pre_hook(refuse)
    yield model
    handle.remove()


BAD = [
    # values the reference rejects too (ours say the range)
    ("top_p", dict(do_sample=True, top_p=-0.1)), ("min_p", dict(do_sample=True, min_p=1.5)),
    ("typical_p", dict(do_sample=True, typical_p=0.0)), ("repetition_penalty", dict(repetition_penalty=0.0)),
    ("bad_words_ids", dict(bad_words_ids=[])), ("top_h", dict(do_sample=True, top_h=0.0)),
    ("suppress_tokens", dict(forced_eos_token_id=2, suppress_tokens=[2])),
    ("sequence_bias", dict(sequence_bias={(5,): 1.0, (VOCAB + 3,): 1.0})),
    # values the reference silently accepts or ignores, or fails on deep inside the loop
    ("top_p", dict(do_sample=True, top_p=1.5)), ("typical_p", dict(do_sample=True, typical_p=1.5)),
    ("epsilon_cutoff", dict(do_sample=True, epsilon_cutoff=1.5)), ("eta_cutoff", dict(eta_cutoff=-0.1)),
    ("no_repeat_ngram_size", dict(no_repeat_ngram_size=-1)),
    ("encoder_no_repeat_ngram_size", dict(encoder_no_repeat_ngram_size=2.5)),
    ("repetition_penalty", dict(repetition_penalty=float("inf"))),
    ("encoder_repetition_penalty", dict(encoder_repetition_penalty=-1.0)),
    ("min_length", dict(min_length=-1)), ("min_new_tokens", dict(min_new_tokens=-2)),
    ("suppress_tokens", dict(suppress_tokens=[VOCAB + 1])), ("begin_suppress_tokens", dict(begin_suppress_tokens=[-1])),
    ("bad_words_ids", dict(bad_words_ids=[[VOCAB]])), ("forced_bos_token_id", dict(forced_bos_token_id=VOCAB)),
    ("forced_eos_token_id", dict(forced_eos_token_id=[])),
    ("exponential_decay_length_penalty", dict(exponential_decay_length_penalty=(2, 0.0))),
    ("exponential_decay_length_penalty", dict(exponential_decay_length_penalty=(-1, 1.5))),
    ("remove_invalid_values", dict(remove_invalid_values="yes")),
    ("renormalize_logits", dict(renormalize_logits=1)),
    ("guidance_scale", dict(guidance_scale=-1.0)),
    ("greenlist_ratio", dict(watermarking_config=dict(greenlist_ratio=1.0))),
    ("seeding_scheme", dict(watermarking_config=dict(seeding_scheme="hash"))),
    ("sampling_table_size", dict(watermarking_config=dict(ngram_len=2, keys=[1], sampling_table_size=2**25))),
    ("negative_prompt_ids", dict(negative_prompt_ids=torch.tensor([[5, 6]]))),
    ("negative_prompt_ids", dict(guidance_scale=2.0, negative_prompt_ids=torch.tensor([[5, VOCAB]]))),
    ("negative_prompt_attention_mask", dict(guidance_scale=2.0, negative_prompt_ids=torch.tensor([[5, 6]]),
                                            negative_prompt_attention_mask=torch.tensor([[1, 1, 1]]))),
    ("prefix_allowed_tokens_fn", dict(prefix_allowed_tokens_fn=[1, 2])),
]


@pytest.mark.parametrize("knob, kwargs", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_range_errors_before_any_forward(forbidden_forward, knob, kwargs):
    with pytest.raises(ValueError, match=knob):
        decoding.generate(forbidden_forward, torch.tensor([[5, 6, 7]]), max_new_tokens=3, eos_token_id=EOS,
                          pad_token_id=PAD, **kwargs)


def test_no_implemented_knob_is_listed_as_not_yet_implemented():
    assert not {cls.name for cls in ours.REFERENCE_PROCESSORS} & set(NOT_YET_IMPLEMENTED)
    for name in ("prefix_allowed_tokens_fn", "negative_prompt_ids", "negative_prompt_attention_mask"):
        assert name not in NOT_YET_IMPLEMENTED


def test_decay_penalty_without_eos_is_refused_before_any_forward(forbidden_forward):
    with pytest.raises(ValueError, match="exponential_decay_length_penalty"):
        decoding.generate(forbidden_forward, torch.tensor([[5, 6, 7]]), max_new_tokens=3, eos_token_id=None,
                          pad_token_id=PAD, exponential_decay_length_penalty=(1, 1.5))


def test_knobs_from_a_generation_config_object():
    """Processor knobs set in a GenerationConfig (overridden by keywords) resolve as the reference's."""
    model = tiny_model("phi3")
    ids, mask = prompts(3, 12)
    emitted = emitted_tokens(model, ids, mask, 1, 6, do_sample=True)
    config = transformers.GenerationConfig(
        do_sample=True, repetition_penalty=1.4, no_repeat_ngram_size=2, suppress_tokens=emitted[:2],
        sequence_bias={(emitted[3],): 3.0}, min_new_tokens=2, typical_p=0.8, eta_cutoff=0.01,
        eos_token_id=[emitted[4], EOS], pad_token_id=PAD, max_new_tokens=6)
    reference, mine = both(model, ids, 1, attention_mask=mask, generation_config=config, repetition_penalty=0.8,
                           return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(reference, mine)
