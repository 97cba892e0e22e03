"""What processors declare (stateful, follows_beams, position_dependent, one_call_per_step, runs_model):
who reads the declarations, that a user's processor is treated exactly as ours, and that each built-in
declaration matches what the processor does."""

import importlib
import pkgutil

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

import decoding
import decoding.processors
from decoding.processors import LogitsProcessor, LogitsProcessorList
from decoding.processors import bans, bias, dry, dynatemp, guidance, lengths, mirostat, normalize, penalties
from decoding.processors import presence, top_n_sigma, warpers, watermark, xtc
from decoding.processors.base import capabilities
from tests.models import EOS, PAD, VOCAB, tiny_model

FIELDS = ("stateful", "follows_beams", "position_dependent", "one_call_per_step", "runs_model")


def declared(processor) -> dict:
    found = capabilities(processor)
    return {field: getattr(found, field) for field in FIELDS}


# ---------------------------------------------------------------- a user's processors

class Tracker(LogitsProcessor):
    """Keeps each row's generated tokens through reset / accept / reorder, and checks them against
    ``input_ids`` at every call: a wrong or missing lifecycle call fails the generation."""

    name = "tracker"
    stateful = True
    follows_beams = True

    def __init__(self, prompt_length: int):
        self.prompt_length = prompt_length
        self.events: list[str] = []
        self.history = None

    def reset(self):
        self.events.append("reset")
        self.history = None

    def __call__(self, input_ids, scores):
        self.events.append("call")
        generated = input_ids[:, self.prompt_length:]
        if self.history is None:
            self.history = generated
        assert torch.equal(self.history, generated), (self.history, generated)
        return scores

    def accept(self, token_ids):
        self.events.append("accept")
        self.history = torch.cat([self.history, token_ids[:, None]], dim=1)

    def reorder(self, beam_rows):
        self.events.append("reorder")
        self.history = self.history[beam_rows.long()]


class WritesItsMethods(LogitsProcessor):
    """Declares nothing, but writes accept and reorder: that declares stateful and follows_beams."""

    def __call__(self, input_ids, scores):
        return scores

    def accept(self, token_ids):
        pass

    def reorder(self, beam_rows):
        pass


class SaysOtherwise(WritesItsMethods):
    stateful = False

    def accept(self, token_ids):
        raise AssertionError("accept must not reach a processor that declares stateful = False")


class Duck:
    """Not a LogitsProcessor: its methods say what it is."""

    def __init__(self):
        self.accepted = []

    def __call__(self, input_ids, scores):
        return scores

    def accept(self, token_ids):
        self.accepted.append(token_ids)


class LengthAware(LogitsProcessor):
    name = "length_aware"
    position_dependent = True

    def __call__(self, input_ids, scores):
        return scores


def test_declarations_are_read_off_any_processor():
    assert declared(WritesItsMethods()) == dict(declared(LogitsProcessor()), stateful=True, follows_beams=True)
    assert not capabilities(SaysOtherwise()).stateful and capabilities(SaysOtherwise()).follows_beams
    assert capabilities(Duck()).stateful and not capabilities(Duck()).follows_beams

    def plain(input_ids, scores):
        return scores
    assert not any(declared(plain).values())
    plain.position_dependent = True
    assert capabilities(plain).position_dependent
    # the reference's classes declare nothing: read from the one table, by class name
    assert capabilities(transformers.MinLengthLogitsProcessor(5, EOS)).position_dependent
    assert not capabilities(transformers.RepetitionPenaltyLogitsProcessor(1.2)).position_dependent
    assert capabilities(transformers.RepetitionPenaltyLogitsProcessor(1.2, prompt_ignore_length=2)).position_dependent
    assert not any(declared(transformers.TopKLogitsWarper(5)).values())


def reference_twins(model):
    """Pairs (ours, the reference's) built with the same arguments."""
    ids = torch.tensor([[5, 6, 7]])
    synthid = dict(ngram_len=3, keys=[1, 2], sampling_table_size=64, sampling_table_seed=0, context_history_size=4,
                   device="cpu")
    return [
        (lengths.MinLengthLogitsProcessor(5, EOS), transformers.MinLengthLogitsProcessor(5, EOS)),
        (lengths.MinNewTokensLengthLogitsProcessor(3, 2, EOS), transformers.MinNewTokensLengthLogitsProcessor(3, 2, EOS)),
        (lengths.ForcedBOSTokenLogitsProcessor(1), transformers.ForcedBOSTokenLogitsProcessor(1)),
        (lengths.ForcedEOSTokenLogitsProcessor(9, EOS), transformers.ForcedEOSTokenLogitsProcessor(9, EOS)),
        (lengths.ExponentialDecayLengthPenalty((2, 1.5), EOS, 3),
         transformers.ExponentialDecayLengthPenalty((2, 1.5), EOS, 3)),
        (bans.SuppressTokensAtBeginLogitsProcessor([4], 3), transformers.SuppressTokensAtBeginLogitsProcessor([4], 3)),
        (bans.NoRepeatNGramLogitsProcessor(2), transformers.NoRepeatNGramLogitsProcessor(2)),
        (bans.PrefixConstrainedLogitsProcessor(lambda b, i: [3], 1),
         transformers.PrefixConstrainedLogitsProcessor(lambda b, i: [3], 1)),
        (bans.EncoderNoRepeatNGramLogitsProcessor(2, ids), transformers.EncoderNoRepeatNGramLogitsProcessor(2, ids)),
        (bans.SuppressTokensLogitsProcessor([4]), transformers.SuppressTokensLogitsProcessor([4])),
        (penalties.RepetitionPenaltyLogitsProcessor(1.2), transformers.RepetitionPenaltyLogitsProcessor(1.2)),
        (penalties.RepetitionPenaltyLogitsProcessor(1.2, 2), transformers.RepetitionPenaltyLogitsProcessor(1.2, 2)),
        (warpers.TemperatureLogitsWarper(0.7), transformers.TemperatureLogitsWarper(0.7)),
        (warpers.TopPLogitsWarper(0.8), transformers.TopPLogitsWarper(0.8)),
        (guidance.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model),
         transformers.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model)),
        (watermark.SynthIDTextWatermarkLogitsProcessor(**synthid),
         transformers.SynthIDTextWatermarkLogitsProcessor(**synthid)),
    ]


def test_the_reference_classes_are_read_as_ours_declare():
    for ours, theirs in reference_twins(tiny_model("llama")):
        assert declared(ours) == declared(theirs), type(ours).__name__


def test_list_accepts_only_stateful_processors_and_resets_every_one_that_can():
    duck, quiet = Duck(), SaysOtherwise()
    tracker = Tracker(prompt_length=0)
    pipeline = LogitsProcessorList([duck, quiet, tracker, lambda i, s: s])
    pipeline.reset()
    pipeline(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 4))
    pipeline.accept(torch.tensor([1, 2]))
    assert len(duck.accepted) == 1 and tracker.events == ["reset", "call", "accept"]
    assert pipeline.keywords() == ["Duck", "processor", "tracker", "function"]
    assert pipeline.names() == ["Duck", "SaysOtherwise", "Tracker", "function"]


def test_clone_forks_state_and_shares_models_and_stateless_callables():
    model = tiny_model("llama")
    miro = mirostat.MirostatV2LogitsWarper(2.0, 0.5)
    cfg = guidance.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model)

    def plain(input_ids, scores):
        return scores
    duck = Duck()
    pipeline = LogitsProcessorList([miro, cfg, plain, duck])
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    miro(None, scores)
    fork = pipeline.clone()
    assert fork[2] is plain and fork[1].model is model and fork[3] is not duck
    fork.accept(torch.tensor([3]))
    assert fork[0].mu.tolist() != [4.0] and miro.mu.tolist() == [4.0]       # the original has not accepted yet
    assert duck.accepted == [] and len(fork[3].accepted) == 1
    miro.accept(torch.tensor([0]))                                          # the original still can


# ---------------------------------------------------------------- our loops drive the lifecycle

def lifecycle_run(**knobs):
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    tracker = Tracker(prompt_length=ids.shape[1])
    out = decoding.generate(model, ids, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD,
                            logits_processor=[tracker], **knobs)
    return tracker, out


@pytest.mark.parametrize("knobs", [dict(), dict(do_sample=True, seed=3), dict(do_sample=True)],
                         ids=["greedy", "seeded sampling", "sampling"])
def test_a_users_stateful_processor_gets_reset_and_accept(knobs):
    tracker, out = lifecycle_run(**knobs)
    assert tracker.events == ["reset"] + ["call", "accept"] * 6
    assert torch.equal(tracker.history, out[:, 4:])


@pytest.mark.parametrize("do_sample", [False, True])
def test_a_users_stateful_processor_follows_the_beams(do_sample):
    tracker, _ = lifecycle_run(num_beams=3, do_sample=do_sample)
    assert tracker.events[0] == "reset"
    steps = tracker.events[1:]
    assert steps == ["call", "reorder", "accept"] * (len(steps) // 3) and len(steps) >= 3
    # (each call checked the tracked histories against the running beams)


def test_processors_that_write_accept_or_reorder_get_them_in_beam_search():
    calls = []

    class Written(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

        def accept(self, token_ids):
            calls.append("accept")

        def reorder(self, beam_rows):
            calls.append("reorder")

    decoding.generate(tiny_model("llama"), torch.tensor([[5, 6, 7]]), max_new_tokens=3, num_beams=2,
                      eos_token_id=None, pad_token_id=PAD, logits_processor=[Written(), SaysOtherwise()])
    assert calls[:2] == ["reorder", "accept"] and len(calls) >= 4


def test_mirostat_inside_model_generate_fails_loudly():
    model, ids = tiny_model("llama"), torch.tensor([[5, 6, 7]])
    warper = mirostat.MirostatV2LogitsWarper(3.0)
    with pytest.raises(RuntimeError, match=r"accept\(\).*model.generate never calls.*decoding.generate"):
        model.generate(ids, logits_processor=[warper], do_sample=True, max_new_tokens=4, pad_token_id=PAD)
    # the same instance runs in our loop, which resets it first and accepts every step
    out = decoding.generate(model, ids, logits_processor=[warper], do_sample=True, max_new_tokens=4,
                            pad_token_id=PAD, eos_token_id=None, seed=1)
    assert out.shape == (1, 7)


# ---------------------------------------------------------------- speculation reads the declarations

def refusal(model, ids, **knobs) -> str:
    with pytest.raises(NotImplementedError) as info:
        decoding.generate(model, ids, max_new_tokens=3, prompt_lookup_num_tokens=3, pad_token_id=PAD, **knobs)
    return str(info.value)


def test_a_users_position_dependent_processor_is_refused_like_ours():
    model, one, two = tiny_model("llama"), torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 7], [8, 9, 10]])
    ours = refusal(model, two, no_repeat_ngram_size=2)
    theirs = refusal(model, two, logits_processor=[LengthAware()])
    assert theirs.replace("length_aware", "X") == ours.replace("no_repeat_ngram_size", "X")

    def plain(input_ids, scores):
        return scores
    plain.position_dependent = True
    assert "depends on each row's length" in refusal(model, two, logits_processor=[plain])
    reference = transformers.MinNewTokensLengthLogitsProcessor(3, 2, EOS)
    assert "MinNewTokensLengthLogitsProcessor depends on each row's length" in refusal(
        model, two, logits_processor=[reference])
    # one row is exact: no refusal, and the tokens of plain greedy
    knobs = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=PAD, logits_processor=[LengthAware()])
    assert torch.equal(decoding.generate(model, one, **knobs),
                       decoding.generate(model, one, prompt_lookup_num_tokens=3, **knobs))


def test_speculation_refuses_what_the_declarations_say_it_cannot_run():
    model, one, two = tiny_model("llama"), torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert "tracker (Tracker) keeps state through accept()" in refusal(model, one, logits_processor=[Tracker(3)])
    synthid = dict(ngram_len=2, keys=[3])
    assert "moves its own state one token per call" in refusal(model, two, watermarking_config=synthid)
    assert "with seed=" in refusal(model, one, watermarking_config=synthid, do_sample=True, seed=2)

    class Runs(LengthAware):
        name = "runs"
        position_dependent = False
        runs_model = True
    with pytest.raises(NotImplementedError, match="runs with a draft model or early exit"):
        decoding.generate(model, one, max_new_tokens=3, assistant_early_exit=1, logits_processor=[Runs()])


# ---------------------------------------------------------------- each built-in declaration against its behaviour

V = 24        # vocabulary of the behaviour checks (guidance uses the model's)
PROMPT = torch.tensor([[3, 4, 5, 3]])
SYNTHID = dict(ngram_len=3, keys=[1, 2], sampling_table_size=64, sampling_table_seed=0, context_history_size=4,
               device="cpu")

# Processors declaring none of the five flags: (factory, vocabulary).
UNDECLARED = {
    "EncoderRepetitionPenaltyLogitsProcessor": lambda: penalties.EncoderRepetitionPenaltyLogitsProcessor(1.3, PROMPT),
    "RepetitionPenaltyLogitsProcessor": lambda: penalties.RepetitionPenaltyLogitsProcessor(1.3),
    "EncoderNoRepeatNGramLogitsProcessor": lambda: bans.EncoderNoRepeatNGramLogitsProcessor(2, PROMPT),
    "SequenceBiasLogitsProcessor": lambda: bans.SequenceBiasLogitsProcessor({(3,): 1.0, (4, 5): -2.0}),
    "NoBadWordsLogitsProcessor": lambda: bans.NoBadWordsLogitsProcessor([[3], [4, 5]], EOS),
    "SuppressTokensLogitsProcessor": lambda: bans.SuppressTokensLogitsProcessor([3, 4]),
    "InfNanRemoveLogitsProcessor": lambda: normalize.InfNanRemoveLogitsProcessor(),
    "LogitNormalization": lambda: normalize.LogitNormalization(),
    "TemperatureLogitsWarper": lambda: warpers.TemperatureLogitsWarper(0.7),
    "TopKLogitsWarper": lambda: warpers.TopKLogitsWarper(3),
    "TopPLogitsWarper": lambda: warpers.TopPLogitsWarper(0.8),
    "TopHLogitsWarper": lambda: warpers.TopHLogitsWarper(0.5),
    "MinPLogitsWarper": lambda: warpers.MinPLogitsWarper(0.1),
    "TypicalLogitsWarper": lambda: warpers.TypicalLogitsWarper(0.8),
    "EpsilonLogitsWarper": lambda: warpers.EpsilonLogitsWarper(0.05),
    "EtaLogitsWarper": lambda: warpers.EtaLogitsWarper(0.05),
    "WatermarkLogitsProcessor": lambda: watermark.WatermarkLogitsProcessor(V, "cpu"),
    "LogitBiasLogitsProcessor": lambda: bias.LogitBiasLogitsProcessor({3: 2.0, 7: -1.0}, V),
    "AllowedTokenIdsLogitsProcessor": lambda: bias.AllowedTokenIdsLogitsProcessor([3, 4, 5, 9], V),
    "DynamicTemperatureLogitsWarper": lambda: dynatemp.DynamicTemperatureLogitsWarper(1.0, 0.5),
    "TopNSigmaLogitsWarper": lambda: top_n_sigma.TopNSigmaLogitsWarper(1.0),
    "XTCLogitsWarper": lambda: xtc.XTCLogitsWarper(0.5, 0.05),
}

# Position-dependent ones: (factory, a row, the same last tokens after tokens the row already holds).
POSITIONAL = {
    "MinLengthLogitsProcessor": (lambda: lengths.MinLengthLogitsProcessor(5, EOS), [3, 4, 5, 6], [3, 3, 4, 5, 6]),
    "MinNewTokensLengthLogitsProcessor": (lambda: lengths.MinNewTokensLengthLogitsProcessor(3, 2, EOS),
                                          [3, 4, 5, 6], [3, 3, 4, 5, 6]),
    "ForcedBOSTokenLogitsProcessor": (lambda: lengths.ForcedBOSTokenLogitsProcessor(1), [3], [3, 3]),
    "ForcedEOSTokenLogitsProcessor": (lambda: lengths.ForcedEOSTokenLogitsProcessor(5, EOS), [3, 4, 5, 6],
                                      [3, 3, 4, 5, 6]),
    "ExponentialDecayLengthPenalty": (lambda: lengths.ExponentialDecayLengthPenalty((1, 1.5), EOS, 2), [3, 4, 5],
                                      [3, 3, 4, 5]),
    "SuppressTokensAtBeginLogitsProcessor": (lambda: bans.SuppressTokensAtBeginLogitsProcessor([5], 3), [3, 4, 5],
                                             [3, 3, 4, 5]),
    "NoRepeatNGramLogitsProcessor": (lambda: bans.NoRepeatNGramLogitsProcessor(2), [3, 4, 3], [3, 3, 4, 3]),
    "PrefixConstrainedLogitsProcessor": (lambda: bans.PrefixConstrainedLogitsProcessor(lambda b, ids: [len(ids)], 1),
                                         [3, 4, 5], [3, 3, 4, 5]),
    "RepetitionPenaltyLogitsProcessor": (lambda: penalties.RepetitionPenaltyLogitsProcessor(1.5, 1), [3, 4],
                                         [3, 3, 4]),
    "PresencePenaltyLogitsProcessor": (lambda: presence.PresencePenaltyLogitsProcessor(1.0, 2), [3, 4, 5],
                                       [3, 3, 4, 5]),
    "FrequencyPenaltyLogitsProcessor": (lambda: presence.FrequencyPenaltyLogitsProcessor(1.0, 2), [3, 4, 5],
                                        [3, 3, 4, 5]),
    "DRYLogitsProcessor": (lambda: dry.DRYLogitsProcessor(1.0, dry_allowed_length=1,
                                                          padding_lengths=torch.tensor([2])), [3, 4, 3, 4],
                           [3, 3, 4, 3, 4]),
}


def scores_for(rows: int, vocab: int = V, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def apply(factory, ids, scores):
    torch.manual_seed(0)          # XTC without seeds tosses its coins on the global generator
    return factory()(ids, scores)


def built_in_classes() -> set:
    for module in pkgutil.iter_modules(decoding.processors.__path__):
        importlib.import_module(f"decoding.processors.{module.name}")
    found, todo = set(), [LogitsProcessor]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__module__.startswith("decoding.processors."):
                found.add(cls.__name__)
    return found


def test_every_built_in_processor_is_checked_here():
    checked = set(UNDECLARED) | set(POSITIONAL) | {"XTCLogitsWarper", "MirostatV2LogitsWarper",
                                                   "UnbatchedClassifierFreeGuidanceLogitsProcessor",
                                                   "SynthIDTextWatermarkLogitsProcessor",
                                                   "HammingDiversityLogitsProcessor"}
    assert built_in_classes() <= checked, built_in_classes() - checked


def test_the_diversity_penalty_declares_nothing():
    """Its state (the group, this step's earlier tokens) is set by the group loop before each call
    (set_group; tests/test_diverse_beam_search.py), never through accept / reorder."""
    processor = decoding.processors.HammingDiversityLogitsProcessor(1.0, 4, 2)
    assert not any(declared(processor).values())


def test_undeclared_ones_declare_nothing_and_positional_ones_only_that():
    for name, factory in UNDECLARED.items():
        assert not any(declared(factory()).values()), name
    for name, (factory, _, _) in POSITIONAL.items():
        assert declared(factory()) == dict(declared(LogitsProcessor()), position_dependent=True), name


@settings(max_examples=40, deadline=None)
@given(data=st.data(), rows=st.integers(1, 3), length=st.integers(4, 10), extra=st.integers(1, 4))
def test_undeclared_ones_ignore_the_row_length(data, rows, length, extra):
    """The same tokens, more of them in front: same scores (the last tokens and the set of tokens are kept)."""
    ids = torch.tensor(data.draw(st.lists(st.lists(st.integers(3, 8), min_size=length, max_size=length),
                                          min_size=rows, max_size=rows)))
    front = torch.stack([row[torch.tensor(data.draw(st.lists(st.integers(0, length - 1), min_size=extra,
                                                             max_size=extra)))] for row in ids])
    longer = torch.cat([front, ids], dim=1)
    scores = scores_for(rows, seed=data.draw(st.integers(0, 1000)))
    for name, factory in UNDECLARED.items():
        assert torch.equal(apply(factory, ids, scores), apply(factory, longer, scores)), name


def test_positional_ones_change_with_the_row_length():
    for name, (factory, short, long) in POSITIONAL.items():
        scores = scores_for(1)
        assert not torch.equal(factory()(torch.tensor([short]), scores),
                               factory()(torch.tensor([long]), scores)), name


def test_xtc_is_position_dependent_exactly_when_seeded():
    scores = torch.log(torch.tensor([[0.3, 0.3, 0.2, 0.1, 0.1]]))
    unseeded, seeded = xtc.XTCLogitsWarper(0.5, 0.05), xtc.XTCLogitsWarper(0.5, 0.05, seeds=[7], prompt_length=2)
    assert not unseeded.position_dependent and seeded.position_dependent
    outputs = {tuple(seeded(torch.full((1, n), 3), scores).isinf().flatten().tolist()) for n in range(2, 20)}
    assert len(outputs) == 2          # the coin moves with the length: sometimes it acts, sometimes not
    assert "with seed=" in capabilities(seeded).position_reason


def test_stateless_ones_give_the_same_scores_twice():
    ids, scores = torch.tensor([[3, 4, 5, 3, 4]]), scores_for(1)
    for name, (factory, _, _) in POSITIONAL.items():
        processor = factory()
        assert torch.equal(processor(ids, scores), processor(ids, scores)), name
    for name, factory in UNDECLARED.items():
        processor = factory()
        torch.manual_seed(0)
        first = processor(ids, scores)
        torch.manual_seed(0)
        assert torch.equal(first, processor(ids, scores)), name


def test_mirostat_is_stateful_and_follows_the_beams():
    warper = mirostat.MirostatV2LogitsWarper(2.0, 1.0)
    assert declared(warper) == dict(declared(LogitsProcessor()), stateful=True, follows_beams=True)
    scores = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]] * 2))
    first = warper(None, scores)
    warper.accept(torch.tensor([0, 2]))          # row 0 took a likely token, row 1 an unlikely one
    second = warper(None, scores)
    assert torch.equal(first[0], first[1]) and not torch.equal(second[0], second[1])   # state, per row
    fork = warper.clone()
    warper.accept(torch.tensor([0, 0]))
    fork.accept(torch.tensor([0, 0]))
    fork.reorder(torch.tensor([1, 0]))          # rows swap parents: their state swaps with them
    assert torch.equal(fork.mu, warper.mu.flip(0)) and not torch.equal(fork.mu, warper.mu)
    assert torch.equal(fork(None, scores), warper(None, scores).flip(0))


def test_call_stepped_ones_move_on_every_call():
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    cases = [(lambda: watermark.SynthIDTextWatermarkLogitsProcessor(**SYNTHID), V),
             (lambda: guidance.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model), VOCAB)]
    for factory, vocab in cases:
        processor, scores = factory(), scores_for(1, vocab)
        assert capabilities(processor).one_call_per_step and not capabilities(processor).stateful
        first = processor(ids, scores)
        assert not torch.equal(first, processor(ids, scores))      # the same input, one step further
        processor.reset()
        assert torch.equal(first, processor(ids, scores))          # reset starts it over
        longer = torch.cat([ids[:, :2], ids], dim=1)               # and the row's length does not matter
        assert torch.equal(factory()(ids, scores), factory()(longer, scores))


def test_guidance_runs_the_model_and_nothing_else_does():
    model = tiny_model("llama")
    forwards = []
    handle = model.register_forward_pre_hook(lambda *a: forwards.append(1))
    try:
        cfg = guidance.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model)
        cfg(torch.tensor([[5, 6]]), scores_for(1, VOCAB))
    finally:
        handle.remove()
    assert capabilities(cfg).runs_model and forwards
    others = [f() for f in UNDECLARED.values()] + [f() for f, _, _ in POSITIONAL.values()]
    assert not any(capabilities(p).runs_model for p in others)
