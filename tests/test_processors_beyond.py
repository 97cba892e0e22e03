"""The processors beyond the reference: each one's defining rule as a property, end to end, range errors."""

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
from decoding.processors.bias import AllowedTokenIdsLogitsProcessor, LogitBiasLogitsProcessor
from decoding.processors.dry import DRYLogitsProcessor
from decoding.processors.dynatemp import DynamicTemperatureLogitsWarper
from decoding.processors.mirostat import MirostatV2LogitsWarper
from decoding.processors.presence import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor
from decoding.processors.top_n_sigma import TopNSigmaLogitsWarper
from decoding.processors.xtc import XTCLogitsWarper
from tests.models import PAD, VOCAB, prompts, tiny_model

LN2 = math.log(2.0)


@st.composite
def score_rows(draw, rows=st.integers(1, 4), vocab=st.integers(2, 40), with_inf=True):
    """``[rows, vocab]`` float32 scores with a random spread, some ``-inf`` (never a whole row)."""
    r, v = draw(rows), draw(vocab)
    seed = draw(st.integers(0, 2**31 - 1))
    spread = draw(st.sampled_from([0.5, 2.0, 6.0]))
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(r, v, generator=g) * spread
    if with_inf and draw(st.booleans()):
        banned = torch.rand(r, v, generator=g) < 0.3
        banned[:, 0] = False
        scores = scores.masked_fill(banned, -float("inf"))
    return scores


# ---------------------------------------------------------------- top-n-sigma

@given(scores=score_rows(), n=st.floats(0.1, 3.0))
def test_top_n_sigma_keeps_exactly_the_logits_within_n_sigma_of_the_max(scores, n):
    out = TopNSigmaLogitsWarper(n)(None, scores)
    for row, result in zip(scores.double(), out):
        finite = row[torch.isfinite(row)]
        threshold = finite.max() - n * finite.std(unbiased=False)
        for value, kept in zip(row.tolist(), result.tolist()):
            if value == -math.inf:
                assert kept == -math.inf
            elif abs(value - threshold) > 1e-4:  # away from float rounding at the boundary
                assert kept == (value if value >= threshold else -math.inf)
        assert result.max() == finite.max()


@given(scores=score_rows(), n=st.floats(0.1, 3.0), temperature=st.floats(0.2, 5.0))
def test_top_n_sigma_is_temperature_invariant(scores, n, temperature):
    kept = torch.isfinite(TopNSigmaLogitsWarper(n)(None, scores))
    kept_scaled = torch.isfinite(TopNSigmaLogitsWarper(n)(None, scores / temperature))
    threshold = TopNSigmaLogitsWarper(n).threshold(scores)
    clear = (scores - threshold).abs() > 1e-3
    assert torch.equal(kept[clear], kept_scaled[clear])


# ---------------------------------------------------------------- DRY

def brute_force_dry(ids, vocab, multiplier, base, allowed, breakers, last_n, padding):
    """The DRY penalty by its definition, one row, one candidate token at a time."""
    ids = ids[padding:]
    if last_n > 0:
        ids = ids[-last_n:]
    w = len(ids)
    penalty = [0.0] * vocab
    for v in range(vocab):
        if v in breakers:
            continue
        longest = 0
        for j in range(w - 1):
            if ids[j + 1] != v:
                continue
            n = 0
            while j - n >= 0 and ids[j - n] == ids[w - 1 - n] and ids[w - 1 - n] not in breakers:
                n += 1
            longest = max(longest, n)
        if longest >= allowed:
            penalty[v] = multiplier * base ** (longest - allowed)
    return penalty


@settings(max_examples=60)
@given(data=st.data(), vocab=st.integers(3, 6), multiplier=st.floats(0.1, 3.0), base=st.floats(1.0, 3.0),
       allowed=st.integers(1, 3), last_n=st.sampled_from([-1, 1, 2, 5, 12]), rows=st.integers(1, 3))
def test_dry_penalises_exactly_the_tokens_extending_a_repeat(data, vocab, multiplier, base, allowed, last_n, rows):
    length = data.draw(st.integers(1, 18))
    ids = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length),
                                          min_size=rows, max_size=rows)))
    padding = torch.tensor(data.draw(st.lists(st.integers(0, length - 1), min_size=rows, max_size=rows)))
    breakers = data.draw(st.lists(st.integers(0, vocab - 1), max_size=2, unique=True))
    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(length))
    processor = DRYLogitsProcessor(multiplier, base, allowed, breakers, last_n, padding_lengths=padding)
    out = processor(ids, scores)
    for r in range(rows):
        expected = brute_force_dry(ids[r].tolist(), vocab, multiplier, base, allowed, set(breakers), last_n,
                                   int(padding[r]))
        torch.testing.assert_close(scores[r] - out[r], torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_dry_never_matches_across_a_sequence_breaker():
    x, brk, y, z, other = 3, 4, 5, 6, 7
    ids = torch.tensor([[x, brk, y, z, other, x, brk, y]])
    scores = torch.zeros(1, 8)
    without = DRYLogitsProcessor(1.0, 2.0, 2)(ids, scores)
    with_breaker = DRYLogitsProcessor(1.0, 2.0, 2, dry_sequence_breakers=[brk])(ids, scores)
    assert without[0, z] == -2.0           # `x brk y` (3 tokens) would repeat: 1 * 2 ** (3 - 2)
    assert with_breaker[0, z] == 0.0       # only `y` (1 token < allowed_length 2) is after the breaker
    assert torch.equal(with_breaker, torch.zeros(1, 8))


# ---------------------------------------------------------------- XTC

@given(scores=score_rows(vocab=st.integers(2, 12)), threshold=st.floats(0.01, 0.5))
def test_xtc_removes_the_top_choices_but_the_least_likely_of_them(scores, threshold):
    out = XTCLogitsWarper(1.0, threshold)(None, scores)
    for row, result in zip(scores, out):
        probs = row.softmax(-1)
        top = [v for v, p in enumerate(probs.tolist()) if p >= threshold]
        if len(top) < 2:
            assert torch.equal(result, row)
            continue
        least = min(probs[v] for v in top)
        for v, (before, after) in enumerate(zip(row.tolist(), result.tolist())):
            removed = v in top and probs[v] > least
            assert after == (-math.inf if removed else before)


@given(scores=score_rows(vocab=st.integers(2, 12)), threshold=st.floats(0.01, 0.5))
def test_xtc_with_probability_zero_changes_nothing(scores, threshold):
    assert torch.equal(XTCLogitsWarper(0.0, threshold)(None, scores), scores)


@settings(max_examples=5)
@given(probability=st.floats(0.1, 0.9), seed=st.integers(0, 1000))
def test_xtc_acts_with_the_given_probability(probability, seed):
    rows = 4000
    scores = torch.tensor([[3.0, 2.9, 0.0, -1.0]]).repeat(rows, 1)   # two tokens above 0.1: XTC can act
    torch.manual_seed(seed)
    acted = torch.isinf(XTCLogitsWarper(probability, 0.1)(None, scores)).any(-1).float().mean().item()
    assert abs(acted - probability) < 4 * math.sqrt(probability * (1 - probability) / rows)


def test_xtc_seeded_coins_depend_only_on_seed_and_step():
    scores = torch.tensor([[3.0, 2.9, 0.0, -1.0]]).repeat(3, 1)
    ids = torch.zeros(3, 7, dtype=torch.long)
    batch = XTCLogitsWarper(0.5, 0.1, seeds=[11, 12, 13], prompt_length=4)(ids, scores)
    for row, seed in enumerate([11, 12, 13]):
        alone = XTCLogitsWarper(0.5, 0.1, seeds=[seed], prompt_length=2)(ids[:1, :5], scores[:1])
        assert torch.equal(alone[0], batch[row])


# ---------------------------------------------------------------- mirostat v2

@given(first=score_rows(vocab=st.integers(2, 30)), data=st.data(), tau=st.floats(0.5, 6.0), eta=st.floats(0.01, 1.0))
def test_mirostat_truncates_to_surprise_below_mu_and_steers_mu(first, data, tau, eta):
    rows, vocab = first.shape
    processor = MirostatV2LogitsWarper(tau, eta)
    processor.reset()
    mu = torch.full((rows,), 2 * tau, dtype=torch.float64)
    scores = first
    for step in range(3):
        out = processor(None, scores)
        surprise = -scores.double().log_softmax(-1) / LN2
        clear = (surprise - mu[:, None]).abs() > 1e-4
        expected = (surprise <= mu[:, None]) | (scores == scores.max(-1, keepdim=True).values)
        assert torch.equal(torch.isfinite(out)[clear], expected[clear])
        kept = torch.isfinite(out)
        tokens = torch.tensor([data.draw(st.sampled_from(torch.nonzero(k).flatten().tolist())) for k in kept])
        processor.accept(tokens)
        q = out.double().log_softmax(-1).gather(1, tokens[:, None])[:, 0]
        mu = mu - eta * (-q / LN2 - tau)
        torch.testing.assert_close(processor.mu.double(), mu, rtol=1e-5, atol=1e-5)
        scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(step)) * 3


def test_mirostat_clone_and_reset_fork_and_forget_state():
    processor = MirostatV2LogitsWarper(2.0, 0.5)
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    processor(None, scores)
    processor.accept(torch.tensor([0]))
    fork = processor.clone()
    mu = processor.mu.clone()
    fork(None, scores)
    fork.accept(torch.tensor([1]))
    assert torch.equal(processor.mu, mu) and not torch.equal(fork.mu, mu)
    processor.reset()
    processor(None, scores)
    assert processor.mu.tolist() == [4.0]


def test_mirostat_follows_the_beams_it_is_reordered_to():
    """Beam sampling: row j continues old row beam_rows[j]; its mu is the parent's, updated with the
    surprise of its token under the parent's truncated distribution."""
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    processor = MirostatV2LogitsWarper(1.5, 0.5)
    processor(None, scores)
    processor.accept(torch.tensor([0, 1, 2]))           # rows now have different mu
    mu_before = processor.mu.clone()
    kept = processor(None, scores)
    processor.reorder(torch.tensor([2, 0, 0]))
    processor.accept(torch.tensor([3, 0, 1]))
    for row, (parent, token) in enumerate([(2, 3), (0, 0), (0, 1)]):
        surprise = -kept[parent].log_softmax(-1)[token] / math.log(2.0)
        expected = mu_before[parent] - 0.5 * (surprise - 1.5)
        assert torch.isclose(processor.mu[row], expected), (row, processor.mu, expected)


def test_mirostat_with_beam_sampling_runs_and_is_reproducible():
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(decoding.generate(model, ids, max_new_tokens=8, do_sample=True, num_beams=3, mirostat_tau=3.0,
                                      eos_token_id=None, pad_token_id=0))
    assert torch.equal(*runs)


# ---------------------------------------------------------------- presence / frequency

@given(data=st.data(), rows=st.integers(1, 3), prompt=st.integers(0, 6), generated=st.integers(0, 8),
       presence=st.floats(-2, 2), frequency=st.floats(-2, 2))
def test_presence_and_frequency_count_generated_tokens_only(data, rows, prompt, generated, presence, frequency):
    vocab = 8
    ids = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=prompt + generated,
                                                   max_size=prompt + generated), min_size=rows, max_size=rows)),
                       dtype=torch.long).reshape(rows, prompt + generated)
    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(generated))
    out = FrequencyPenaltyLogitsProcessor(frequency, prompt)(ids, PresencePenaltyLogitsProcessor(presence, prompt)(ids, scores))
    for r in range(rows):
        counts = Counter(ids[r, prompt:].tolist())
        expected = [scores[r, v].item() - presence * (counts[v] > 0) - frequency * counts[v] for v in range(vocab)]
        torch.testing.assert_close(out[r], torch.tensor(expected), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- dynamic temperature

@given(scores=score_rows(), temperature=st.floats(0.1, 3.0), spread=st.floats(0.0, 2.0),
       exponent=st.floats(0.2, 3.0))
def test_dynatemp_follows_the_entropy_formula_within_its_range(scores, temperature, spread, exponent):
    warper = DynamicTemperatureLogitsWarper(temperature, spread, exponent)
    low, high = max(0.0, temperature - spread), temperature + spread
    found = warper.temperatures(scores)
    out = warper(None, scores)
    for row, t, result in zip(scores.double(), found.tolist(), out):
        finite = row[torch.isfinite(row)]
        if len(finite) < 2:
            assert t == pytest.approx(temperature) and torch.equal(result, row.float())
            continue
        p = finite.softmax(-1)
        entropy = -(p * p.log()).sum().item()
        expected = low + (high - low) * (entropy / math.log(len(finite))) ** exponent
        assert low - 1e-5 <= t <= high + 1e-5
        assert t == pytest.approx(expected, rel=1e-4, abs=1e-5)
        if t > 1e-3:
            torch.testing.assert_close(result, (row / t).float(), rtol=1e-4, atol=1e-4)


@given(scores=score_rows(), temperature=st.floats(0.1, 3.0), spread=st.floats(0.0, 2.0))
def test_dynatemp_keeps_the_argmax(scores, temperature, spread):
    out = DynamicTemperatureLogitsWarper(temperature, spread)(None, scores)
    assert torch.equal(out.argmax(-1), scores.argmax(-1))


# ---------------------------------------------------------------- logit_bias / allowed_token_ids

@given(scores=score_rows(with_inf=False), data=st.data())
def test_logit_bias_adds_and_allowed_ids_mask(scores, data):
    vocab = scores.shape[1]
    bias = data.draw(st.dictionaries(st.integers(0, vocab - 1), st.floats(-100, 100), min_size=1))
    allowed = data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, unique=True))
    biased = LogitBiasLogitsProcessor(bias, vocab)(None, scores)
    masked = AllowedTokenIdsLogitsProcessor(allowed, vocab)(None, scores)
    for v in range(vocab):
        torch.testing.assert_close(biased[:, v], scores[:, v] + bias.get(v, 0.0))
        assert torch.equal(masked[:, v], scores[:, v] if v in allowed else torch.full_like(scores[:, v], -math.inf))


def test_processors_do_not_modify_their_input():
    scores = torch.randn(2, 10)
    ids = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
    before = scores.clone()
    for processor in (TopNSigmaLogitsWarper(1.0), DRYLogitsProcessor(1.0), XTCLogitsWarper(1.0, 0.1),
                      MirostatV2LogitsWarper(3.0), PresencePenaltyLogitsProcessor(1.0, 2),
                      FrequencyPenaltyLogitsProcessor(1.0, 2), DynamicTemperatureLogitsWarper(1.0, 0.5),
                      LogitBiasLogitsProcessor({1: 5.0}, 10), AllowedTokenIdsLogitsProcessor([1, 2], 10)):
        processor(ids, scores)
        assert torch.equal(scores, before), processor.name


# ---------------------------------------------------------------- end to end through decoding.generate

def reference_with(model, ids, mask, seed, processor, **kwargs):
    torch.manual_seed(seed)
    return model.generate(ids, attention_mask=mask, logits_processor=[processor], pad_token_id=PAD, **kwargs)


def ours_with(model, ids, mask, seed, **kwargs):
    torch.manual_seed(seed)
    return decoding.generate(model, ids, attention_mask=mask, pad_token_id=PAD, **kwargs)


KEYWORD_CASES = {
    # keyword arguments -> the same processor given to model.generate as a user processor
    "presence_penalty": (dict(presence_penalty=1.5), lambda p, pad: PresencePenaltyLogitsProcessor(1.5, p)),
    "frequency_penalty": (dict(frequency_penalty=-1.0), lambda p, pad: FrequencyPenaltyLogitsProcessor(-1.0, p)),
    "logit_bias": (dict(logit_bias={7: 8.0, 9: -100.0}), lambda p, pad: LogitBiasLogitsProcessor({7: 8.0, 9: -100.0}, VOCAB)),
    "allowed_token_ids": (dict(allowed_token_ids=list(range(100, 160))),
                          lambda p, pad: AllowedTokenIdsLogitsProcessor(range(100, 160), VOCAB)),
    "dry_multiplier": (dict(dry_multiplier=2.0, dry_base=1.5, dry_allowed_length=1, dry_sequence_breakers=[5],
                            dry_penalty_last_n=6),
                       lambda p, pad: DRYLogitsProcessor(2.0, 1.5, 1, [5], 6, padding_lengths=pad)),
    "top_n_sigma": (dict(top_n_sigma=0.7), lambda p, pad: TopNSigmaLogitsWarper(0.7)),
    "xtc_probability": (dict(xtc_probability=0.6, xtc_threshold=0.05), lambda p, pad: XTCLogitsWarper(0.6, 0.05)),
    "dynatemp_range": (dict(temperature=0.8, dynatemp_range=0.5, dynatemp_exponent=2.0),
                       lambda p, pad: DynamicTemperatureLogitsWarper(0.8, 0.5, 2.0)),
}


WARPERS = {"top_n_sigma", "xtc_probability", "dynatemp_range"}


@settings(max_examples=16)
@given(keyword=st.sampled_from(sorted(KEYWORD_CASES)), seed=st.integers(0, 1000), batch=st.integers(1, 3),
       do_sample=st.booleans())
def test_each_keyword_end_to_end_equals_the_processor_inside_model_generate(keyword, seed, batch, do_sample):
    model = tiny_model("llama")
    ids, mask = prompts(batch, seed)
    knobs, make = KEYWORD_CASES[keyword]
    if keyword in WARPERS:
        do_sample = True   # warpers only run when sampling (the reference would apply a user one in greedy too)
    padding = (mask == 0).sum(-1) if bool((mask == 0).any()) else None
    common = dict(max_new_tokens=8, do_sample=do_sample, top_k=0, eos_token_id=None)
    knobs = dict(knobs)
    if "temperature" in knobs:
        knobs.pop("temperature")
        common["temperature"] = 0.8
    ours = ours_with(model, ids, mask, seed, **common, **knobs)
    if "temperature" in common:
        common["temperature"] = 1.0   # the reference has no dynatemp: ours replaces temperature with it
    reference = reference_with(model, ids, mask, seed, make(ids.shape[1], padding), **common)
    assert torch.equal(ours, reference)


def test_each_keyword_end_to_end_is_wired_in():
    """Every keyword above is accepted by generate and changes the pipeline generate builds."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    for keyword, (knobs, make) in KEYWORD_CASES.items():
        built = decoding.pipeline(model, ids, attention_mask=mask, do_sample=True, **knobs)
        assert keyword in [p.name for p in built]


@settings(max_examples=4)
@given(seed=st.integers(0, 1000), tau=st.floats(1.0, 4.0), eta=st.floats(0.05, 0.5))
def test_mirostat_end_to_end_uses_accept(seed, tau, eta):
    """Replay generate's run: each step keeps surprise <= mu, and mu moves with the chosen token."""
    model = tiny_model("llama")
    ids, mask = prompts(2, seed)
    out = decoding.generate(model, ids, attention_mask=mask, do_sample=True, top_k=0, mirostat_tau=tau,
                            mirostat_eta=eta, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, seed=seed,
                            return_dict_in_generate=True, output_scores=True, output_logits=True)
    mu = torch.full((2,), 2 * tau, dtype=torch.float64)
    for step, (logits, scores) in enumerate(zip(out.logits, out.scores)):
        surprise = -logits.double().log_softmax(-1) / LN2
        clear = (surprise - mu[:, None]).abs() > 1e-4
        expected = (surprise <= mu[:, None]) | (logits == logits.max(-1, keepdim=True).values)
        assert torch.equal(torch.isfinite(scores)[clear], expected[clear])
        token = out.sequences[:, ids.shape[1] + step]
        q = scores.double().log_softmax(-1).gather(1, token[:, None])[:, 0]
        mu = mu - eta * (-q / LN2 - tau)


# ---------------------------------------------------------------- range errors, before any forward pass

BAD_VALUES = [
    ("presence_penalty", 2.5), ("presence_penalty", "x"), ("frequency_penalty", -3), ("logit_bias", {3: 101}),
    ("logit_bias", {-1: 1.0}), ("logit_bias", [1, 2]), ("logit_bias", {VOCAB + 5: 1.0}), ("allowed_token_ids", []),
    ("allowed_token_ids", [-1]), ("allowed_token_ids", [VOCAB]), ("top_n_sigma", 0), ("top_n_sigma", math.inf),
    ("xtc_probability", 1.5), ("xtc_threshold", 0.7), ("xtc_threshold", 0), ("dry_multiplier", -1.0),
    ("dry_base", 0.5), ("dry_allowed_length", 0), ("dry_allowed_length", 1.5), ("dry_penalty_last_n", 0),
    ("dry_penalty_last_n", -2), ("dry_sequence_breakers", "\n"), ("dry_sequence_breakers", [-4]),
    ("dry_sequence_breakers", ["\n"]), ("mirostat_tau", 0), ("mirostat_eta", -0.1), ("dynatemp_range", -1.0),
    ("dynatemp_exponent", 0), ("seed", -1), ("seed", [1, 2, 3]), ("seed", "7"), ("seed", True), ("order", "sglang"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_invalid_values_raise_before_the_first_forward(name, value):
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    calls = []
    hook = model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        extra = {"dry_multiplier": 1.0} if name.startswith("dry_") and name != "dry_multiplier" else {}
        with pytest.raises(ValueError, match=name):
            decoding.generate(model, ids, attention_mask=mask, do_sample=True, max_new_tokens=2, **extra,
                              **{name: value})
    finally:
        hook.remove()
    assert calls == []


def test_string_sequence_breakers_are_every_token_containing_them():
    """llama.cpp's rule: a string breaker is every token whose text contains it."""
    from tests.tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer()
    model = tiny_model("llama")
    ids, mask = prompts(1, 0)
    built = decoding.pipeline(model, ids, attention_mask=mask, tokenizer=tokenizer, dry_multiplier=1.0,
                              dry_sequence_breakers=["\n", "e", 7])
    dry = next(p for p in built if p.name == "dry_multiplier")
    texts = [tokenizer.decode([t]) for t in range(len(tokenizer))]
    expected = {t for t, text in enumerate(texts) if "\n" in text or "e" in text} | {7}
    assert set(dry.dry_sequence_breakers) == expected
    assert {tokenizer.convert_tokens_to_ids("he"), tokenizer.convert_tokens_to_ids("Ġthe")} <= expected  # merged
    with pytest.raises(ValueError, match="no single token contains"):   # "ab" spans two tokens
        decoding.pipeline(model, ids, attention_mask=mask, tokenizer=tokenizer, dry_multiplier=1.0,
                          dry_sequence_breakers=["ab"])