"""Every processor of decoding.processors against its transformers twin, exactly.

Scores and ids come from hypothesis; both classes get the same arguments and the same tensors, and
the outputs must be identical: same dtype, same bits, ``-inf`` and ``nan`` in the same places.
"""

import math

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from decoding import processors as ours
from tests.models import tiny_model


@st.composite
def ids_and_scores(draw, min_vocab=2, max_vocab=40, max_len=10, specials=False):
    """``(ids [rows, len] int64, scores [rows, vocab] float32)``: ties, large spreads, some -inf.

    Ids come from a small alphabet so that repeats (n-grams, bad words, biased sequences) happen.
    With ``specials``, scores may also hold nan and +inf.
    """
    rows = draw(st.integers(1, 4))
    vocab = draw(st.integers(min_vocab, max_vocab))
    length = draw(st.integers(1, max_len))
    alphabet = draw(st.integers(1, min(vocab, 6)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    scores = torch.randn(rows, vocab, generator=g) * scale
    if draw(st.booleans()):  # ties
        scores = (scores * 2).round() / 2
    if draw(st.booleans()):  # some tokens already filtered out
        drop = torch.rand(rows, vocab, generator=g) < 0.3
        drop[:, 0] = False
        scores = scores.masked_fill(drop, -math.inf)
    if specials and draw(st.booleans()):
        scores[torch.rand(rows, vocab, generator=g) < 0.1] = math.nan
        scores[torch.rand(rows, vocab, generator=g) < 0.1] = math.inf
    ids = torch.randint(0, alphabet, (rows, length), generator=g)
    return ids, scores


def identical(a, b):
    """Same dtype and shape, nan in the same places, every other value (infinities included) equal."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])


def check(mine, theirs, ids, scores):
    """Both processors on copies of the same inputs; outputs identical, inputs untouched."""
    before = scores.clone()
    out_mine = mine(ids.clone(), scores.clone())
    out_theirs = theirs(ids.clone(), scores.clone())
    assert identical(out_mine, out_theirs), (out_mine, out_theirs)
    mine(ids, scores)
    assert identical(scores, before), "a processor modified its input scores"


token_lists = st.lists(st.integers(0, 5), min_size=1, max_size=4)
eos_ids = st.one_of(st.integers(0, 5), st.lists(st.integers(0, 5), min_size=1, max_size=3))


# --- penalties ---------------------------------------------------------------------------------------

@given(data=ids_and_scores(), penalty=st.sampled_from([0.3, 0.8, 1.0, 1.2, 2.5]),
       ignore=st.sampled_from(["none", "int", "tensor"]), shift=st.integers(0, 5))
def test_repetition_penalty(data, penalty, ignore, shift):
    ids, scores = data
    if ignore == "int":
        ignore_length = shift
    elif ignore == "tensor":
        ignore_length = (torch.arange(ids.shape[0]) + shift) % (ids.shape[1] + 1)
    else:
        ignore_length = None
    check(ours.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=ignore_length),
          transformers.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=ignore_length), ids, scores)


@given(data=ids_and_scores(), penalty=st.sampled_from([0.3, 0.8, 1.2, 2.5]), per_item=st.sampled_from([1, 2]),
       prompt_len=st.integers(1, 6), seed=st.integers(0, 1000))
def test_encoder_repetition_penalty(data, penalty, per_item, prompt_len, seed):
    _, scores = data
    rows, vocab = scores.shape
    scores = scores.repeat_interleave(per_item, 0)
    prompt = torch.randint(0, vocab, (rows, prompt_len), generator=torch.Generator().manual_seed(seed))
    ids = prompt.repeat_interleave(per_item, 0)
    check(ours.EncoderRepetitionPenaltyLogitsProcessor(penalty, prompt),
          transformers.EncoderRepetitionPenaltyLogitsProcessor(penalty, prompt), ids, scores)


# --- bans and biases -----------------------------------------------------------------------------------

@given(data=ids_and_scores(), n=st.integers(1, 5))
def test_no_repeat_ngram(data, n):
    ids, scores = data
    check(ours.NoRepeatNGramLogitsProcessor(n), transformers.NoRepeatNGramLogitsProcessor(n), ids, scores)


@given(data=ids_and_scores(), n=st.integers(1, 4), per_item=st.sampled_from([1, 2]), seed=st.integers(0, 1000))
def test_encoder_no_repeat_ngram(data, n, per_item, seed):
    ids, scores = data
    rows, vocab = scores.shape
    prompt = torch.randint(0, min(vocab, 6), (rows, 8), generator=torch.Generator().manual_seed(seed))
    ids, scores = ids.repeat_interleave(per_item, 0), scores.repeat_interleave(per_item, 0)
    check(ours.EncoderNoRepeatNGramLogitsProcessor(n, prompt),
          transformers.EncoderNoRepeatNGramLogitsProcessor(n, prompt), ids, scores)


@given(data=ids_and_scores(min_vocab=6),
       biases=st.dictionaries(st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
                              st.sampled_from([-3.0, -0.5, 0.25, 2.0, -math.inf]), min_size=1, max_size=5),
       as_list=st.booleans())
def test_sequence_bias(data, biases, as_list):
    ids, scores = data
    bias = [[list(k), v] for k, v in biases.items()] if as_list else biases
    check(ours.SequenceBiasLogitsProcessor(bias), transformers.SequenceBiasLogitsProcessor(bias), ids, scores)


@given(data=ids_and_scores(min_vocab=6), words=st.lists(token_lists, min_size=1, max_size=4),
       eos=st.one_of(st.none(), eos_ids))
def test_bad_words(data, words, eos):
    ids, scores = data
    eos_set = {eos} if isinstance(eos, int) else set(eos or [])
    if all(len(w) == 1 and w[0] in eos_set for w in words):
        words = words + [[5, 4]]  # only eos: a no-op in the reference, refused by us (see below)
    check(ours.NoBadWordsLogitsProcessor(words, eos), transformers.NoBadWordsLogitsProcessor(words, eos), ids, scores)


def test_bad_words_listing_only_eos_is_refused():
    with pytest.raises(ValueError, match="bad_words_ids"):
        ours.NoBadWordsLogitsProcessor([[2]], eos_token_id=2)


@given(data=ids_and_scores(min_vocab=6), tokens=st.lists(st.integers(0, 5), max_size=4), begin=st.integers(0, 11))
def test_suppress_tokens(data, tokens, begin):
    ids, scores = data
    check(ours.SuppressTokensLogitsProcessor(tokens), transformers.SuppressTokensLogitsProcessor(tokens), ids, scores)
    check(ours.SuppressTokensAtBeginLogitsProcessor(tokens, begin),
          transformers.SuppressTokensAtBeginLogitsProcessor(tokens, begin), ids, scores)
    check(ours.SuppressTokensAtBeginLogitsProcessor(tokens, ids.shape[1]),
          transformers.SuppressTokensAtBeginLogitsProcessor(tokens, ids.shape[1]), ids, scores)


@given(data=ids_and_scores(min_vocab=6), beams=st.sampled_from([1, 2]), width=st.integers(1, 3),
       strict=st.booleans())
def test_prefix_constrained(data, beams, width, strict):
    ids, scores = data
    ids, scores = ids.repeat_interleave(beams, 0), scores.repeat_interleave(beams, 0)
    vocab = scores.shape[1]
    if strict:  # allowed tokens often all -inf: the "stuck" branch returns the bare mask
        scores = scores.masked_fill(torch.arange(vocab) > 0, -math.inf)

    def allowed(batch_id, row_ids):
        start = (batch_id + int(row_ids.sum())) % vocab
        return [(start + j) % vocab for j in range(width)]

    check(ours.PrefixConstrainedLogitsProcessor(allowed, beams),
          transformers.PrefixConstrainedLogitsProcessor(allowed, beams), ids, scores)


# --- lengths -----------------------------------------------------------------------------------------

@given(data=ids_and_scores(min_vocab=6), eos=eos_ids, min_length=st.integers(0, 12), prompt=st.integers(0, 6),
       min_new=st.integers(0, 6), forced=st.integers(0, 5), max_length=st.integers(1, 12))
def test_length_processors(data, eos, min_length, prompt, min_new, forced, max_length):
    ids, scores = data
    check(ours.MinLengthLogitsProcessor(min_length, eos), transformers.MinLengthLogitsProcessor(min_length, eos),
          ids, scores)
    check(ours.MinNewTokensLengthLogitsProcessor(prompt, min_new, eos),
          transformers.MinNewTokensLengthLogitsProcessor(prompt, min_new, eos), ids, scores)
    check(ours.ForcedEOSTokenLogitsProcessor(max_length, eos),
          transformers.ForcedEOSTokenLogitsProcessor(max_length, eos), ids, scores)
    check(ours.ForcedEOSTokenLogitsProcessor(ids.shape[1] + 1, eos),
          transformers.ForcedEOSTokenLogitsProcessor(ids.shape[1] + 1, eos), ids, scores)
    check(ours.ForcedBOSTokenLogitsProcessor(forced), transformers.ForcedBOSTokenLogitsProcessor(forced), ids, scores)
    check(ours.ForcedBOSTokenLogitsProcessor(forced), transformers.ForcedBOSTokenLogitsProcessor(forced),
          ids[:, :1], scores)


@given(data=ids_and_scores(min_vocab=6), eos=eos_ids, start=st.integers(0, 6), prompt=st.integers(0, 4),
       factor=st.sampled_from([0.5, 0.9, 1.01, 1.5, 3.0]))
def test_exponential_decay_length_penalty(data, eos, start, prompt, factor):
    ids, scores = data
    check(ours.ExponentialDecayLengthPenalty((start, factor), eos, prompt),
          transformers.ExponentialDecayLengthPenalty((start, factor), eos, prompt), ids, scores)


# --- normalisation -----------------------------------------------------------------------------------

@given(data=ids_and_scores(specials=True))
def test_inf_nan_removal_and_normalisation(data):
    ids, scores = data
    check(ours.InfNanRemoveLogitsProcessor(), transformers.InfNanRemoveLogitsProcessor(), ids, scores)
    check(ours.LogitNormalization(), transformers.LogitNormalization(), ids, scores)
    half = scores.half()
    check(ours.InfNanRemoveLogitsProcessor(), transformers.InfNanRemoveLogitsProcessor(), ids, half)


# --- warpers -----------------------------------------------------------------------------------------

@given(data=ids_and_scores(max_vocab=160), top_h=st.sampled_from([0.05, 0.3, 0.6, 0.9, 1.0]))
def test_top_h(data, top_h):
    ids, scores = data
    check(ours.TopHLogitsWarper(top_h), transformers.TopHLogitsWarper(top_h), ids, scores)


@given(data=ids_and_scores(), min_p=st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]), keep=st.integers(1, 3))
def test_min_p(data, min_p, keep):
    ids, scores = data
    check(ours.MinPLogitsWarper(min_p, min_tokens_to_keep=keep),
          transformers.MinPLogitsWarper(min_p, min_tokens_to_keep=keep), ids, scores)


@given(data=ids_and_scores(), mass=st.sampled_from([0.01, 0.2, 0.5, 0.9, 0.99]), keep=st.integers(1, 3))
def test_typical(data, mass, keep):
    ids, scores = data
    check(ours.TypicalLogitsWarper(mass, min_tokens_to_keep=keep),
          transformers.TypicalLogitsWarper(mass, min_tokens_to_keep=keep), ids, scores)


@given(data=ids_and_scores(), epsilon=st.sampled_from([1e-4, 0.01, 0.05, 0.2, 0.6]), keep=st.integers(1, 3))
def test_epsilon_and_eta(data, epsilon, keep):
    ids, scores = data
    check(ours.EpsilonLogitsWarper(epsilon, min_tokens_to_keep=keep),
          transformers.EpsilonLogitsWarper(epsilon, min_tokens_to_keep=keep), ids, scores)
    check(ours.EtaLogitsWarper(epsilon, min_tokens_to_keep=keep),
          transformers.EtaLogitsWarper(epsilon, min_tokens_to_keep=keep), ids, scores)


# --- watermarks --------------------------------------------------------------------------------------

@settings(max_examples=10)
@given(data=ids_and_scores(min_vocab=40, max_vocab=120), scheme=st.sampled_from(["lefthash", "selfhash"]),
       ratio=st.sampled_from([0.1, 0.25, 0.5]), bias=st.sampled_from([0.5, 2.0]),
       key=st.sampled_from([15485863, 7, 2**40 + 3]), width=st.integers(1, 3))
def test_greenlist_watermark(data, scheme, ratio, bias, key, width):
    ids, scores = data
    vocab = scores.shape[1]
    fields = dict(greenlist_ratio=ratio, bias=bias, hashing_key=key, seeding_scheme=scheme, context_width=width)
    before = torch.random.get_rng_state()
    check(ours.WatermarkLogitsProcessor(vocab, "cpu", **fields),
          transformers.WatermarkLogitsProcessor(vocab, "cpu", **fields), ids, scores)
    assert torch.equal(torch.random.get_rng_state(), before), "the watermark touched the global RNG"


@settings(max_examples=10)
@given(data=ids_and_scores(min_vocab=6), ngram_len=st.integers(1, 4), keys=st.lists(st.integers(0, 10**6),
       min_size=1, max_size=4), table=st.sampled_from([2, 97, 2**16]), history=st.sampled_from([1, 3, 1024]),
       skip=st.booleans(), debug=st.booleans(), steps=st.integers(1, 6), seed=st.integers(0, 1000))
def test_synthid_watermark_over_several_steps(data, ngram_len, keys, table, history, skip, debug, steps, seed):
    ids, scores = data
    fields = dict(ngram_len=ngram_len, keys=keys, sampling_table_size=table, sampling_table_seed=seed,
                  context_history_size=history, device="cpu", skip_first_ngram_calls=skip, debug_mode=debug)
    mine, theirs = ours.SynthIDTextWatermarkLogitsProcessor(**fields), \
        transformers.SynthIDTextWatermarkLogitsProcessor(**fields)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):  # stateful: context and history follow the generated tokens
        assert identical(mine(ids, scores.clone()), theirs(ids, scores.clone()))
        ids = torch.cat([ids, torch.randint(0, 3, (ids.shape[0], 1), generator=g)], 1)  # repeats contexts
        scores = scores.roll(1, dims=1)


# --- classifier-free guidance ------------------------------------------------------------------------

@settings(max_examples=6)
@given(scale=st.sampled_from([0.0, 1.0, 1.5, 3.0]), negative=st.sampled_from(["none", "ids", "masked"]),
       use_cache=st.booleans(), seed=st.integers(0, 1000))
def test_unbatched_guidance_over_several_steps(scale, negative, use_cache, seed):
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 500, (2, 4), generator=g)
    neg = neg_mask = None
    if negative != "none":
        neg = torch.randint(3, 500, (2, 3), generator=g)
    if negative == "masked":
        neg_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    mine = ours.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model, neg, neg_mask, use_cache=use_cache)
    theirs = transformers.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model, neg, neg_mask,
                                                                         use_cache=use_cache)
    with torch.no_grad():
        for _ in range(3):
            scores = torch.randn(2, 512, generator=g) * 3
            assert identical(mine(ids, scores.clone()), theirs(ids, scores.clone()))
            ids = torch.cat([ids, torch.randint(3, 500, (2, 1), generator=g)], 1)


# --- names and constructor checks --------------------------------------------------------------------

def test_every_class_has_the_reference_name_and_its_knob():
    knobs = set()
    for cls in ours.REFERENCE_PROCESSORS:
        assert hasattr(transformers, cls.__name__), cls.__name__
        knobs.add(cls.name)
    assert knobs == {
        "guidance_scale", "sequence_bias", "encoder_repetition_penalty", "repetition_penalty",
        "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
        "prefix_allowed_tokens_fn", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "temperature", "top_h",
        "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "watermarking_config",
        "renormalize_logits"}


@pytest.mark.parametrize("make, knob", [
    (lambda: ours.RepetitionPenaltyLogitsProcessor(0.0), "repetition_penalty"),
    (lambda: ours.RepetitionPenaltyLogitsProcessor(-1.0), "repetition_penalty"),
    (lambda: ours.EncoderRepetitionPenaltyLogitsProcessor(0.0, torch.zeros(1, 2, dtype=torch.long)),
     "encoder_repetition_penalty"),
    (lambda: ours.NoRepeatNGramLogitsProcessor(0), "no_repeat_ngram_size"),
    (lambda: ours.EncoderNoRepeatNGramLogitsProcessor(-1, torch.zeros(1, 2, dtype=torch.long)),
     "encoder_no_repeat_ngram_size"),
    (lambda: ours.SequenceBiasLogitsProcessor({}), "sequence_bias"),
    (lambda: ours.SequenceBiasLogitsProcessor({(1, -2): 1.0}), "sequence_bias"),
    (lambda: ours.NoBadWordsLogitsProcessor([]), "bad_words_ids"),
    (lambda: ours.NoBadWordsLogitsProcessor([[1], []]), "bad_words_ids"),
    (lambda: ours.MinLengthLogitsProcessor(-1, 2), "min_length"),
    (lambda: ours.MinNewTokensLengthLogitsProcessor(3, -1, 2), "min_new_tokens"),
    (lambda: ours.ForcedBOSTokenLogitsProcessor(-1), "forced_bos_token_id"),
    (lambda: ours.ForcedEOSTokenLogitsProcessor(5, [-1]), "forced_eos_token_id"),
    (lambda: ours.ExponentialDecayLengthPenalty((2, 0.0), 2, 3), "exponential_decay_length_penalty"),
    (lambda: ours.ExponentialDecayLengthPenalty((-1, 1.5), 2, 3), "exponential_decay_length_penalty"),
    (lambda: ours.SuppressTokensLogitsProcessor([-3]), "suppress_tokens"),
    (lambda: ours.TopHLogitsWarper(0.0), "top_h"),
    (lambda: ours.TopHLogitsWarper(1.5), "top_h"),
    (lambda: ours.MinPLogitsWarper(1.5), "min_p"),
    (lambda: ours.TypicalLogitsWarper(1.5), "typical_p"),
    (lambda: ours.EpsilonLogitsWarper(1.0), "epsilon_cutoff"),
    (lambda: ours.EtaLogitsWarper(0.0), "eta_cutoff"),
    (lambda: ours.MinPLogitsWarper(0.1, min_tokens_to_keep=0), "min_tokens_to_keep"),
    (lambda: ours.UnbatchedClassifierFreeGuidanceLogitsProcessor(-1.0, None), "guidance_scale"),
    (lambda: ours.WatermarkLogitsProcessor(10, "cpu", greenlist_ratio=1.0), "greenlist_ratio"),
    (lambda: ours.WatermarkLogitsProcessor(10, "cpu", seeding_scheme="hash"), "seeding_scheme"),
    (lambda: ours.SynthIDTextWatermarkLogitsProcessor(0, [1], 8, 0, 4, "cpu"), "ngram_len"),
    (lambda: ours.SynthIDTextWatermarkLogitsProcessor(2, [1], 2**25, 0, 4, "cpu"), "sampling_table_size"),
])
def test_constructors_reject_out_of_range(make, knob):
    with pytest.raises(ValueError, match=knob):
        make()


@given(data=ids_and_scores(min_vocab=2, max_vocab=39), width=st.integers(1, 2))
def test_selfhash_watermark_on_a_small_vocabulary(data, width):
    """Fewer than 40 tokens: the reference's candidate loop fails; ours checks every token, using the
    reference's own green lists."""
    ids, scores = data
    vocab = scores.shape[1]
    mine = ours.WatermarkLogitsProcessor(vocab, "cpu", bias=2.0, seeding_scheme="selfhash", context_width=width)
    theirs = transformers.WatermarkLogitsProcessor(vocab, "cpu", bias=2.0, seeding_scheme="selfhash",
                                                   context_width=width)
    out = mine(ids, scores.clone())
    if ids.shape[1] < width:
        assert identical(out, scores)
        return
    for row in range(ids.shape[0]):
        green = [c for c in range(vocab)
                 if c in theirs._get_greenlist_ids(torch.cat([ids[row], torch.tensor([c])]))]
        expected = scores[row].clone()
        expected[green] += 2.0
        assert identical(out[row], expected)


def test_guidance_repr_names_the_model_class_only():
    text = repr(ours.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, tiny_model("llama")))
    assert "LlamaForCausalLM" in text and "guidance_scale=1.5" in text and len(text) < 200
