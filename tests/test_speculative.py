"""Speculative decoding against model.generate (assisted generation), token for token, plus
distribution tests for speculative sampling and the batch > 1 extension (which the reference refuses)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
import decoding.streaming
import decoding.strategies.speculative.loop as speculative
from decoding.strategies.speculative.drafters import Draft
from decoding.strategies.speculative.setup import supports_early_exit
from tests.models import ARCHITECTURES, EOS, PAD, VOCAB, prompts, tiny_model
from tests.reference import assert_same_steps, emitted

ARCHS = sorted(ARCHITECTURES)
EARLY_EXIT_ARCHS = sorted(a for a in ARCHS if supports_early_exit(tiny_model(a)))
NO_SLIDING_ARCHS = sorted(a for a in ARCHS if a not in ("mistral", "gemma2"))
DRAFTERS = ["draft model", "prompt lookup", "early exit"]
SCHEDULES = [(20, "constant", 0.4), (3, "heuristic", 0.0), (2, "constant", None), (5, "heuristic_transient", 0.3)]


def draft_model(arch):
    return tiny_model(arch, seed=1)


def set_schedule(model, schedule):
    """Write the schedule where the reference reads it: the drafting model's generation_config."""
    tokens, kind, threshold = schedule
    model.generation_config.num_assistant_tokens = tokens
    model.generation_config.num_assistant_tokens_schedule = kind
    model.generation_config.assistant_confidence_threshold = threshold


def drafter_kwargs(arch, drafter, lookup_tokens=3, ngram=2, exit_layer=1):
    if drafter == "draft model":
        return dict(assistant_model=draft_model(arch))
    if drafter == "prompt lookup":
        return dict(prompt_lookup_num_tokens=lookup_tokens, max_matching_ngram_size=ngram)
    return dict(assistant_early_exit=exit_layer)


def both(model, ids, seed, schedule, drafting_model, **kwargs):
    """Run the reference and ours from the same seed and schedule (the heuristic one writes back)."""
    set_schedule(drafting_model, schedule)
    torch.manual_seed(seed)
    reference = model.generate(ids, **kwargs)
    written_back = drafting_model.generation_config.num_assistant_tokens
    set_schedule(drafting_model, schedule)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, **kwargs)
    assert drafting_model.generation_config.num_assistant_tokens == written_back
    set_schedule(drafting_model, SCHEDULES[0])
    return reference, ours


def assert_same(reference, ours):
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    assert len(reference.scores) == len(ours.scores) == len(ours.logits)
    assert_same_steps(reference.scores, ours.scores)
    assert_same_steps(reference.logits, ours.logits)


def one_row_prompt(seed, padded):
    """One prompt; ``padded`` gives it left padding (a batch of one with a mask that is not all ones)."""
    ids, mask = prompts(1, seed, min_len=3, max_len=10)
    if padded:
        ids = torch.cat([torch.full((1, 2), PAD), ids], dim=1)
        mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), mask], dim=1)
    return ids, mask


def one_row_case(arch, drafter, seed, padded, repetitive):
    """``(model, ids, mask, drafter)`` for a one-row comparison; early exit falls back to a draft model
    on architectures that run every layer."""
    if drafter == "early exit" and arch not in EARLY_EXIT_ARCHS:
        drafter = "draft model"
    if repetitive:
        ids = repetitive_prompt(seed)
        mask = torch.ones_like(ids)
    else:
        ids, mask = one_row_prompt(seed, padded)
    return tiny_model(arch), ids, mask, drafter


def repetitive_prompt(seed):
    """A prompt that repeats itself, so prompt lookup finds n-grams to copy."""
    g = torch.Generator().manual_seed(seed)
    piece = torch.randint(3, VOCAB, (int(torch.randint(3, 6, (1,), generator=g)),), generator=g)
    return torch.cat([piece, piece, piece[: int(torch.randint(1, 3, (1,), generator=g))]])[None, :]


@settings(max_examples=60)
@given(arch=st.sampled_from(ARCHS), drafter=st.sampled_from(DRAFTERS), seed=st.integers(0, 10_000),
       steps=st.integers(1, 16), padded=st.booleans(), repetitive=st.booleans(), schedule=st.sampled_from(SCHEDULES),
       eos_pick=st.integers(-4, 15), lookup=st.integers(1, 6), ngram=st.integers(1, 3))
def test_greedy_matches_reference(arch, drafter, seed, steps, padded, repetitive, schedule, eos_pick, lookup, ngram):
    model, ids, mask, drafter = one_row_case(arch, drafter, seed, padded, repetitive)
    # eos: none (negative pick), or a token the model really emits, so generation stops early
    eos = None if eos_pick < 0 else emitted(model, ids, mask, 0, steps, PAD)[0, eos_pick % steps]
    kwargs = drafter_kwargs(arch, drafter, lookup, ngram)
    drafting = kwargs.get("assistant_model", model)
    reference, ours = both(model, ids, seed, schedule, drafting, attention_mask=mask, max_new_tokens=steps,
                           eos_token_id=eos, pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                           output_logits=True, **kwargs)
    assert_same(reference, ours)
    # assisted greedy is greedy: the tokens are the target's plain greedy tokens
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(plain, ours.sequences)


sampling_params = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.5, 0.7, 1.0, 1.5]),
    "top_k": st.sampled_from([0, 5, 50]),
    "top_p": st.sampled_from([0.5, 0.9, 1.0]),
})


@settings(max_examples=50)
@given(arch=st.sampled_from(ARCHS), drafter=st.sampled_from(DRAFTERS), seed=st.integers(0, 10_000),
       steps=st.integers(1, 16), padded=st.booleans(), repetitive=st.booleans(), schedule=st.sampled_from(SCHEDULES),
       params=sampling_params, with_eos=st.booleans())
def test_sampling_matches_reference(arch, drafter, seed, steps, padded, repetitive, schedule, params, with_eos):
    """Same seed, same draws: the draft's samples, one uniform per drafted token, the target's draw."""
    model, ids, mask, drafter = one_row_case(arch, drafter, seed, padded, repetitive)
    kwargs = drafter_kwargs(arch, drafter)
    drafting = kwargs.get("assistant_model", model)
    reference, ours = both(model, ids, seed, schedule, drafting, attention_mask=mask, max_new_tokens=steps,
                           eos_token_id=EOS if with_eos else None, pad_token_id=PAD, do_sample=True,
                           return_dict_in_generate=True, output_scores=True, output_logits=True, **params, **kwargs)
    assert_same(reference, ours)


@settings(max_examples=30)
@given(arch=st.sampled_from(NO_SLIDING_ARCHS), drafter=st.sampled_from(DRAFTERS), batch=st.integers(2, 4),
       seed=st.integers(0, 10_000), steps=st.integers(1, 14), eos_pick=st.integers(-3, 13),
       schedule=st.sampled_from(SCHEDULES))
def test_batch_rows_equal_plain_greedy(arch, drafter, batch, seed, steps, eos_pick, schedule):
    """Beyond the reference (it refuses batch > 1): every row equals the target's plain greedy output."""
    if drafter == "early exit" and arch not in EARLY_EXIT_ARCHS:
        drafter = "prompt lookup"
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed, min_len=4)  # row 0 holds the 4-token repeat below
    ids[0, -4:] = ids[0, -2:].repeat(2)  # a repeat in row 0 for prompt lookup to find
    eos = None if eos_pick < 0 else emitted(model, ids[:1], mask[:1], 0, steps, PAD)[0, eos_pick % steps]
    kwargs = drafter_kwargs(arch, drafter)
    set_schedule(kwargs.get("assistant_model", model), schedule)
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos, pad_token_id=PAD)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos,
                             pad_token_id=PAD, **kwargs)
    set_schedule(kwargs.get("assistant_model", model), SCHEDULES[0])
    assert torch.equal(plain, ours), (plain, ours)


def test_batch_rows_accept_different_numbers_of_tokens():
    """The ragged case really happens: in some round, rows keep different numbers of drafted tokens."""
    model = tiny_model("llama")
    ids, mask = prompts(3, 11)
    ids[1, -6:] = ids[1, -3:].repeat(2)
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None, pad_token_id=PAD)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None, pad_token_id=PAD,
                             assistant_early_exit=1, return_dict_in_generate=True)
    assert torch.equal(plain, ours.sequences)
    stats = ours.trace["speculation"]
    assert any(len(set(accepted)) > 1 for accepted in stats.accepted)
    assert stats.target_forwards < 24


def test_statistics_are_recorded():
    model, draft = tiny_model("llama"), draft_model("llama")
    set_schedule(draft, (4, "constant", None))
    ids = repetitive_prompt(3)
    out = decoding.generate(model, ids, max_new_tokens=20, eos_token_id=None, assistant_model=draft,
                            return_dict_in_generate=True)
    set_schedule(draft, SCHEDULES[0])
    stats = out.trace["speculation"]
    assert stats.drafter == "draft model"
    assert len(stats.proposed) == len(stats.accepted) == stats.target_forwards
    assert all(0 <= a <= p <= 4 for (p,), (a,) in zip(stats.proposed, stats.accepted))
    assert sum(a + 1 for (a,) in stats.accepted) == 20  # each round adds its accepted drafts + the target's token
    assert [[a + 1] for (a,) in stats.accepted] == stats.added
    assert stats.tokens_per_forward == 20 / stats.target_forwards
    assert stats.draft_forwards > 0
    assert 0.0 <= stats.acceptance_rate <= 1.0


def test_streamer_receives_what_the_reference_sends():
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    model = tiny_model("llama")
    ids = repetitive_prompt(5)
    reference, ours = Recorder(), Recorder()
    model.generate(ids, max_new_tokens=12, eos_token_id=None, prompt_lookup_num_tokens=4, streamer=reference)
    decoding.generate(model, ids, max_new_tokens=12, eos_token_id=None, prompt_lookup_num_tokens=4, streamer=ours)
    assert reference.calls == ours.calls


# ---------------------------------------------------------------------------------------------------
# Speculative sampling keeps the target's distribution: chi-square tests with fixed seeds.

def chi_square_p_value(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Pearson's test of observed ``counts`` against ``expected_probs``; bins expecting < 5 are pooled."""
    n = counts.sum()
    expected = expected_probs.double() * n
    big = expected >= 5
    observed = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    expected = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = expected > 0
    stat = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def target_distributions(model, prompt, temperature):
    """Exact first-token and (marginal) second-token distributions of plain sampling, ``[vocab]`` each."""
    with torch.no_grad():
        first = torch.softmax(model(prompt).logits[0, -1].double() / temperature, -1)
        vocab = first.shape[0]
        extended = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        second = torch.softmax(model(extended).logits[:, -1].double() / temperature, -1)
    return first, first @ second


def sample_two_tokens(model, draft, prompt, rows, temperature, seed):
    set_schedule(draft, (2, "constant", None))
    torch.manual_seed(seed)
    out = decoding.generate(model, prompt.repeat(rows, 1), max_new_tokens=2, eos_token_id=None, pad_token_id=PAD,
                            do_sample=True, temperature=temperature, top_k=0, assistant_model=draft,
                            return_dict_in_generate=True)
    set_schedule(draft, SCHEDULES[0])
    return out.sequences[:, -2:], out.trace["speculation"]


def close_draft():
    """A draft near the target (same weights, a flatter head), so drafts are often but not always accepted."""
    return tiny_model("llama", seed=0, target_entropy=4.5)


@pytest.mark.parametrize("temperature,seed", [(1.0, 0), (0.7, 1)])
def test_speculative_sampling_keeps_the_target_distribution(temperature, seed):
    model, draft = tiny_model("llama"), close_draft()
    prompt = prompts(1, 21 + seed)[0]
    first, second = target_distributions(model, prompt, temperature)
    tokens, stats = sample_two_tokens(model, draft, prompt, 6000, temperature, seed)
    rate = stats.acceptance_rate
    assert 0.2 < rate < 0.9  # both branches (accept and resample from max(0, p - q)) are exercised
    for position, expected in ((0, first), (1, second)):
        counts = torch.bincount(tokens[:, position], minlength=VOCAB)
        assert chi_square_p_value(counts, expected) > 1e-3


def test_chi_square_catches_a_wrong_acceptance_rule(monkeypatch):
    """Accepting every drafted token samples from the draft, not the target: the test must see it."""
    def accept_everything(draft: Draft, scores):
        last = torch.multinomial(scores[torch.arange(scores.shape[0]), draft.counts].softmax(-1), 1)
        return torch.cat([draft.tokens, last], dim=1), draft.counts

    monkeypatch.setattr(speculative, "accept_speculative_sampling", accept_everything)
    model, draft = tiny_model("llama"), close_draft()
    prompt = prompts(1, 21)[0]
    first, _ = target_distributions(model, prompt, 1.0)
    tokens, _ = sample_two_tokens(model, draft, prompt, 6000, 1.0, 0)
    counts = torch.bincount(tokens[:, 0], minlength=VOCAB)
    assert chi_square_p_value(counts, first) < 1e-6


# ---------------------------------------------------------------------------------------------------
# Checks before the first forward pass.

@pytest.mark.parametrize("kwargs,error,words", [
    (dict(prompt_lookup_num_tokens=0), ValueError, "prompt_lookup_num_tokens"),
    (dict(prompt_lookup_num_tokens=3, max_matching_ngram_size=0), ValueError, "max_matching_ngram_size"),
    (dict(prompt_lookup_num_tokens=3, use_cache=False), ValueError, "use_cache"),
    (dict(assistant_early_exit=0), ValueError, "assistant_early_exit"),
    (dict(assistant_early_exit=3), ValueError, "[1, 2]"),
    (dict(assistant_early_exit=1, num_assistant_tokens=0), ValueError, "num_assistant_tokens"),
    (dict(assistant_early_exit=1, num_assistant_tokens_schedule="fast"), ValueError, "num_assistant_tokens_schedule"),
    (dict(assistant_early_exit=1, assistant_confidence_threshold=2.0), ValueError, "assistant_confidence_threshold"),
    (dict(prompt_lookup_num_tokens=3, output_attentions=True), NotImplementedError, "output_attentions"),
])
def test_bad_settings_are_refused_before_any_forward(kwargs, error, words):
    model = tiny_model("llama")
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(error, match=None) as info:
            decoding.generate(model, torch.tensor([[5, 6, 7]]), max_new_tokens=3, **kwargs)
    finally:
        handle.remove()
    assert words in str(info.value)
    assert not calls


def test_refusals_that_depend_on_the_models_and_the_batch():
    llama, ids = tiny_model("llama"), torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(NotImplementedError, match="num_hidden_layers"):
        decoding.generate(tiny_model("gpt2"), ids[:1], max_new_tokens=3, assistant_early_exit=1)
    with pytest.raises(ValueError, match="vocabulary"):
        decoding.generate(llama, ids[:1], max_new_tokens=3, assistant_model=tiny_model("gpt2").__class__(
            tiny_model("gpt2").config.__class__(vocab_size=100, n_embd=16, n_layer=1, n_head=2)).eval())
    with pytest.raises(ValueError, match="Pass only one"):
        decoding.generate(llama, ids[:1], max_new_tokens=3, assistant_model=draft_model("llama"),
                          prompt_lookup_num_tokens=3)
    with pytest.raises(ValueError, match="streamer"):   # a real streamer: speculation streams one row only
        decoding.generate(llama, ids, max_new_tokens=3, prompt_lookup_num_tokens=3,
                          streamer=decoding.streaming.BaseStreamer())
    with pytest.raises(NotImplementedError, match="output_scores"):
        decoding.generate(llama, ids, max_new_tokens=3, prompt_lookup_num_tokens=3, return_dict_in_generate=True,
                          output_scores=True)
    with pytest.raises(NotImplementedError, match="sliding-window"):
        decoding.generate(tiny_model("mistral"), ids, max_new_tokens=3, prompt_lookup_num_tokens=3)


def test_schedule_passed_to_the_call_is_used():
    """Deliberate difference: the reference ignores num_assistant_tokens passed to generate; we use it."""
    model, draft = tiny_model("llama"), draft_model("llama")
    ids = repetitive_prompt(2)
    out = decoding.generate(model, ids, max_new_tokens=12, eos_token_id=None, assistant_model=draft,
                            num_assistant_tokens=3, assistant_confidence_threshold=None, return_dict_in_generate=True)
    assert max(p for (p,) in out.trace["speculation"].proposed) == 3
    assert draft.generation_config.num_assistant_tokens == 20


def test_draft_sees_generated_pad_tokens_as_the_reference_does():
    """Regression: the reference's assistant infers its mask from the sequence each round, so a generated
    token equal to pad_token_id is masked for the draft; copying that keeps the sampled tokens equal."""
    model, draft = tiny_model("opt"), draft_model("opt")
    ids, mask = prompts(1, 1)
    kwargs = dict(attention_mask=mask, max_new_tokens=12, eos_token_id=None, pad_token_id=PAD, do_sample=True,
                  temperature=0.7, top_k=50, assistant_model=draft)
    torch.manual_seed(1)
    reference = model.generate(ids, **kwargs)
    torch.manual_seed(1)
    ours = decoding.generate(model, ids, **kwargs)
    assert (reference[0, ids.shape[1]:] == PAD).any()  # the case: a generated pad token
    assert torch.equal(reference, ours)


def test_stop_strings_work_with_a_draft_model():
    """The reference fails here (its assistant's generate gets the stop strings but no tokenizer);
    we check stop strings on the target's sequence once per round, as it does for prompt lookup."""
    from tests.tokenizer import byte_tokenizer
    model, ids = tiny_model("llama"), repetitive_prompt(4)
    kwargs = dict(max_new_tokens=10, eos_token_id=None, stop_strings=["zz"], tokenizer=byte_tokenizer())
    with pytest.raises(ValueError, match="stop strings"):
        model.generate(ids, assistant_model=draft_model("llama"), **kwargs)
    plain = model.generate(ids, **kwargs)
    assert torch.equal(plain, decoding.generate(model, ids, assistant_model=draft_model("llama"), **kwargs))


def alone(ids, mask, row):
    """Row ``row`` of a left-padded batch as a batch of one, its padding removed."""
    keep = mask[row] == 1
    return ids[row, keep][None], mask[row, keep][None]


@settings(max_examples=60, deadline=None)
@given(arch=st.sampled_from(NO_SLIDING_ARCHS), drafter=st.sampled_from(DRAFTERS), batch=st.integers(1, 3),
       prompt_seed=st.integers(0, 10_000), seed=st.integers(0, 2**40), steps=st.integers(1, 14),
       params=sampling_params, with_eos=st.booleans(), schedule=st.sampled_from(SCHEDULES))
def test_seeded_speculation_equals_plain_seeded_sampling(arch, drafter, batch, prompt_seed, seed, steps, params,
                                                         with_eos, schedule):
    """With seed=, speculation on or off gives every row the same tokens; a row alone equals it in the batch."""
    if drafter == "early exit" and arch not in EARLY_EXIT_ARCHS:
        drafter = "prompt lookup"
    model = tiny_model(arch)
    ids, mask = prompts(batch, prompt_seed, min_len=4)
    ids[0, -4:] = ids[0, -2:].repeat(2)  # a repeat in row 0 for prompt lookup to find
    knobs = dict(do_sample=True, seed=seed, max_new_tokens=steps, eos_token_id=EOS if with_eos else None,
                 pad_token_id=PAD, **params)
    kwargs = drafter_kwargs(arch, drafter)
    set_schedule(kwargs.get("assistant_model", model), schedule)
    try:
        plain = decoding.generate(model, ids, attention_mask=mask, **knobs)
        spec = decoding.generate(model, ids, attention_mask=mask, **knobs, **kwargs)
        assert torch.equal(plain, spec), (plain, spec)
        row = batch - 1
        row_ids, row_mask = alone(ids, mask, row)
        single = decoding.generate(model, row_ids, attention_mask=row_mask, **dict(knobs, seed=[seed + row]),
                                   **kwargs)
        new = single[0, row_ids.shape[1]:]
        assert torch.equal(new, spec[row, ids.shape[1]:ids.shape[1] + new.shape[0]])
    finally:
        set_schedule(kwargs.get("assistant_model", model), SCHEDULES[0])


@pytest.mark.parametrize("drafter", ["target as draft model", "early exit at the last layer"])
def test_seeded_drafts_are_coupled_with_the_target(drafter):
    """The draft draws with the target's seeded noise: a draft equal to the target is (nearly) always accepted,
    while with independent noise it would agree only as often as two samples of the same distribution do."""
    model = tiny_model("llama")
    ids, mask = prompts(3, 4)
    kwargs = dict(assistant_model=model) if drafter.startswith("target") else dict(
        assistant_early_exit=model.config.num_hidden_layers)
    knobs = dict(attention_mask=mask, do_sample=True, seed=[5, 6, 7], max_new_tokens=24, eos_token_id=None,
                 pad_token_id=PAD, temperature=1.2)
    out = decoding.generate(model, ids, return_dict_in_generate=True, num_assistant_tokens=6,
                            assistant_confidence_threshold=0.0, **knobs, **kwargs)
    stats = out.trace["speculation"]
    assert stats.acceptance_rate > 0.95, stats.acceptance_rate
    assert stats.target_forwards <= 6  # 24 tokens, up to 7 per forward
    assert torch.equal(out.sequences, decoding.generate(model, ids, **knobs))


def test_seeded_speculation_refuses_xtc_over_several_rows():
    model, two = tiny_model("llama"), torch.tensor([[5, 6, 7], [8, 9, 10]])
    knobs = dict(max_new_tokens=5, do_sample=True, xtc_probability=0.5, xtc_threshold=0.05, prompt_lookup_num_tokens=3,
                 eos_token_id=None, pad_token_id=PAD)
    with pytest.raises(NotImplementedError, match="xtc_probability with seed="):
        decoding.generate(model, two, seed=3, **knobs)
    # one row: its coin's key is exact, so speculation changes nothing
    one = two[:1]
    plain = decoding.generate(model, one, seed=3, **{k: v for k, v in knobs.items() if k != "prompt_lookup_num_tokens"})
    assert torch.equal(plain, decoding.generate(model, one, seed=3, **knobs))


def test_an_error_mid_generation_keeps_the_tokens_so_far():
    class Boom:
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores=None, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    model, ids = tiny_model("llama"), repetitive_prompt(6)
    with pytest.raises(decoding.GenerationInterrupted) as info:
        decoding.generate(model, ids, max_new_tokens=30, eos_token_id=None, prompt_lookup_num_tokens=3,
                          stopping_criteria=[Boom()])
    partial = info.value.partial
    plain = model.generate(ids, max_new_tokens=30, eos_token_id=None)
    assert ids.shape[1] < partial.shape[1] < plain.shape[1]
    assert torch.equal(partial, plain[:, :partial.shape[1]])


REFERENCE_KNOBS = [
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[8], [9, 10]], sequence_bias={(5,): 2.0}),
    dict(min_new_tokens=5, min_length=9, suppress_tokens=[12, 13], begin_suppress_tokens=[14]),
    dict(forced_eos_token_id=EOS, exponential_decay_length_penalty=(2, 1.1), encoder_repetition_penalty=1.2),
    dict(renormalize_logits=True, remove_invalid_values=True, watermarking_config=dict(bias=2.0)),
    dict(top_k=20, min_p=0.05, typical_p=0.9, temperature=0.8),
]


@pytest.mark.parametrize("drafter", DRAFTERS)
@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("knobs", REFERENCE_KNOBS)
def test_reference_processors_with_speculation_match_the_reference(drafter, do_sample, knobs):
    """The reference's processors on every verified position: same tokens and scores as model.generate."""
    model = tiny_model("llama")
    ids, mask = one_row_prompt(5, padded=False)
    ids = torch.cat([ids, ids[:, -3:], ids[:, -3:]], dim=1)  # something for prompt lookup to copy
    mask = torch.ones_like(ids)
    kwargs = drafter_kwargs("llama", drafter)
    reference, ours = both(model, ids, 7, SCHEDULES[1], kwargs.get("assistant_model", model), attention_mask=mask,
                           max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, do_sample=do_sample,
                           return_dict_in_generate=True, output_scores=True, output_logits=True, **knobs, **kwargs)
    assert_same(reference, ours)


@pytest.mark.parametrize("knobs", [dict(presence_penalty=0.8, frequency_penalty=0.5),
                                   dict(logit_bias={5: 3.0, 9: -2.0}, allowed_token_ids=list(range(3, 200))),
                                   dict(dry_multiplier=0.8, dry_allowed_length=1)])
@pytest.mark.parametrize("drafter", DRAFTERS)
def test_processors_beyond_the_reference_with_speculation_equal_plain_greedy(knobs, drafter):
    """The reference has no such knobs; greedy speculation with them equals plain greedy with them."""
    model = tiny_model("llama")
    ids = repetitive_prompt(3)
    kwargs = drafter_kwargs("llama", drafter)
    plain = decoding.generate(model, ids, max_new_tokens=14, eos_token_id=None, pad_token_id=PAD, **knobs)
    spec = decoding.generate(model, ids, max_new_tokens=14, eos_token_id=None, pad_token_id=PAD, **knobs, **kwargs)
    assert torch.equal(plain, spec)


def test_processors_speculation_cannot_apply_exactly_are_refused():
    model, one, two = tiny_model("llama"), torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 7], [8, 9, 10]])
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(NotImplementedError, match="mirostat_tau.*accept"):
            decoding.generate(model, one, max_new_tokens=3, do_sample=True, mirostat_tau=3.0,
                              prompt_lookup_num_tokens=3)
        with pytest.raises(NotImplementedError, match="guidance_scale with a draft model"):
            decoding.generate(model, one, max_new_tokens=3, guidance_scale=1.5, assistant_early_exit=1)
        for knob in (dict(min_new_tokens=2), dict(no_repeat_ngram_size=2), dict(presence_penalty=0.5)):
            with pytest.raises(NotImplementedError, match="depends on each row's length"):
                decoding.generate(model, two, max_new_tokens=3, prompt_lookup_num_tokens=3, **knob)
        padded = torch.tensor([[PAD, 6, 7], [8, 9, 10]])
        with pytest.raises(NotImplementedError, match="repetition_penalty depends"):
            decoding.generate(model, padded, attention_mask=(padded != PAD).long(), max_new_tokens=3,
                              prompt_lookup_num_tokens=3, repetition_penalty=1.2)
    finally:
        handle.remove()
    assert not calls
    # unpadded rows: the repetition penalty reads no prompt boundary, so several rows stay exact
    plain = decoding.generate(model, two, max_new_tokens=6, repetition_penalty=1.2, pad_token_id=PAD)
    spec = decoding.generate(model, two, max_new_tokens=6, repetition_penalty=1.2, pad_token_id=PAD,
                             prompt_lookup_num_tokens=3)
    assert torch.equal(plain, spec)


def test_speculation_resets_stateful_processors_before_each_call():
    class Counting(decoding.LogitsProcessor):
        name = "counting"

        def __init__(self):
            self.calls = 0

        def reset(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            return scores

    model, counting = tiny_model("llama"), Counting()
    ids = repetitive_prompt(3)
    counts = []
    for _ in range(2):
        decoding.generate(model, ids, max_new_tokens=8, prompt_lookup_num_tokens=3, logits_processor=[counting])
        counts.append(counting.calls)
    assert counts[0] == counts[1] > 0   # without reset() the second call would count on from the first
