"""decoding.diff over two outputs or traces, and decoding.compare over any two decoders."""

import math

import pytest
import torch

import decoding
from decoding.inputs import left_pad
from decoding.processors.penalties import RepetitionPenaltyLogitsProcessor
from tests.models import PAD, tiny_model

SAMPLING = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, do_sample=True, temperature=0.8, top_k=10,
                repetition_penalty=1.2)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def batch():
    return left_pad([[5, 6, 7, 8], [9, 10]], PAD)


def perturbed_penalty(step: int, row: int, token: int, prompt_length: int):
    """A repetition penalty (the same class name, so it replaces the built-in in place) that, at new token
    ``step``, raises ``token``'s score in ``row`` far above every other."""
    def call(self, input_ids, scores):
        scores = RepetitionPenaltyLogitsProcessor.__call__(self, input_ids, scores)
        if input_ids.shape[1] == prompt_length + step:
            scores = scores.clone()
            scores[row, token] = scores[row].max() + 50.0
        return scores
    cls = type("RepetitionPenaltyLogitsProcessor", (RepetitionPenaltyLogitsProcessor,), {"__call__": call})
    return cls(1.2, prompt_ignore_length=torch.tensor([0, 2]))


def test_a_perturbed_processor_is_reported_at_its_step_and_stage(model):
    ids, mask = batch()
    plain = decoding.generate(model, ids, attention_mask=mask, seed=5, return_dict_in_generate=True, trace=True,
                              **SAMPLING)
    chosen = plain.trace.steps[3]["rows"][1]["chosen"]
    other = next(c["token"] for c in plain.trace.steps[3]["rows"][1]["stages"][0]["top"] if c["token"] != chosen)
    broken = perturbed_penalty(3, 1, other, ids.shape[1])
    result = decoding.compare(model, ids, attention_mask=mask, seed=5, against={"logits_processor": [broken]},
                              **SAMPLING)
    d = result.divergence
    assert not result.identical and (d.step, d.row) == (3, 1) and result.first_difference == (1, 3)
    assert (d.token_a, d.token_b) == (other, chosen)
    assert plain.trace.data["stages"] == ["raw", "repetition_penalty", "temperature", "top_k"]
    assert (d.stage, d.stage_step, d.stage_row) == ("repetition_penalty", 3, 1)     # raw agreed there
    assert d.a["token_a"]["prob"] == pytest.approx(1.0) and d.a["token_b"]["prob"] < 1e-9
    assert d.b["token_b"]["prob"] == pytest.approx(plain.trace.steps[3]["rows"][1]["stages"][-1]["chosen_prob"])
    assert d.gap_a > 50 / 0.8 - 1e-3                                  # the forced token's margin on side a
    assert d.gap_b == pytest.approx(d.b["token_b"]["score"] - d.b["token_a"]["score"])   # sampled: may be < 0
    assert result.max_score_difference == 0.0
    assert "stage 'repetition_penalty' (new token 3, row 1)" in result.summary()
    table = d.table()
    assert f"token {other}" in table and "p=1.0000" in table and "gap" in table
    # the same two runs through diff directly: the outputs (raw and processed stages) and the traces
    assert decoding.diff(result.reference, result.ours).step == 3
    assert decoding.diff(result.reference.trace, result.ours.trace).stage == "repetition_penalty"
    assert decoding.diff(_untraced(result.reference), _untraced(result.ours)).stage == "processed"


def test_a_token_filtered_on_one_side_only_is_a_difference(model):
    ids, mask = batch()
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    unused = next(t for t in range(3, 512) if t not in plain[:, ids.shape[1]:].flatten().tolist())

    def ban_from_step_2(input_ids, scores):
        if input_ids.shape[1] >= ids.shape[1] + 2:
            scores = scores.clone()
            scores[:, unused] = -math.inf
        return scores

    result = decoding.compare(model, ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD,
                              against={"logits_processor": [ban_from_step_2]})
    d = result.divergence
    assert result.identical and d.identical and d.step is None
    assert d.max_score_difference == math.inf and result.max_score_difference == math.inf
    assert (d.stage, d.stage_step, d.stage_row) == ("ban_from_step_2", 2, 0)
    by_outputs = decoding.diff(_untraced(result.reference), _untraced(result.ours))
    assert by_outputs.identical and by_outputs.stage == "processed" and by_outputs.stage_step == 2


def _untraced(out):
    return decoding.GenerateOutput(sequences=out.sequences, scores=out.scores, logits=out.logits)


def test_rows_that_end_early_and_row_counts_that_differ(model):
    ids, mask = batch()
    common = dict(max_new_tokens=6, pad_token_id=PAD, return_dict_in_generate=True, trace=True)
    open_ended = decoding.generate(model, ids, attention_mask=mask, eos_token_id=None, **common)
    eos = open_ended.trace.chosen(0)[2]
    ended = decoding.generate(model, ids, attention_mask=mask, eos_token_id=eos, **common)
    d = decoding.diff(ended, open_ended)
    first_end = min(r.index(eos) for r in (open_ended.trace.chosen(0), open_ended.trace.chosen(1)) if eos in r)
    assert d.step == first_end + 1 and d.token_a is None and d.token_b is not None
    assert "(ended)" in d.summary()
    # the padding after an eos is not a difference: the same runs compared on outputs, told the eos
    assert decoding.diff(_untraced(ended), _untraced(ended), eos_token_id=eos).identical
    one = decoding.generate(model, ids[:1], attention_mask=mask[:1], eos_token_id=None, **common)
    d = decoding.diff(open_ended, one)
    assert not d.identical and d.step is None and (d.rows_a, d.rows_b) == (2, 1)
    assert d.summary().startswith("different row counts: 2 vs 1")


def test_identical_traces_and_json_round_trip(model):
    ids, mask = batch()
    out = decoding.generate(model, ids, attention_mask=mask, seed=1, return_dict_in_generate=True, trace=True,
                            **SAMPLING)
    again = decoding.insight.Trace.from_json(out.trace.to_json())
    d = decoding.diff(out.trace, again)
    assert d.identical and d.stage is None and d.max_score_difference == 0.0
    assert d.summary().startswith("identical: 2 row(s), 6 steps")
    with pytest.raises(TypeError, match="return_dict_in_generate"):
        decoding.diff(out.sequences, out)


def test_compare_seed_is_renamed_rng_seed(model):
    ids, mask = batch()
    with pytest.warns(DeprecationWarning, match="rng_seed"):
        old = decoding.compare(model, ids, seed=3, attention_mask=mask, max_new_tokens=4, do_sample=True,
                               pad_token_id=PAD)
    new = decoding.compare(model, ids, rng_seed=3, attention_mask=mask, max_new_tokens=4, do_sample=True,
                           pad_token_id=PAD)
    assert old.identical and new.identical and torch.equal(old.ours.sequences, new.ours.sequences)
    assert new.divergence.identical and new.divergence.max_score_difference <= 1e-5
    with pytest.raises(TypeError, match="against"):
        decoding.compare(model, ids, against=3, max_new_tokens=2)


def test_compare_against_a_decoder_callable(model):
    ids, mask = batch()

    def shifted(model, input_ids, **kwargs):
        out = decoding.generate(model, input_ids, **kwargs)
        out.sequences[1, -2] += 1
        return out

    result = decoding.compare(model, ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD,
                              against=shifted)
    assert (result.divergence.step, result.divergence.row) == (3, 1)


def test_the_report_of_a_diff_marks_the_divergence(model):
    from decoding.insight.report import render_report

    ids, mask = batch()
    a = decoding.generate(model, ids, attention_mask=mask, seed=1, return_dict_in_generate=True, trace=True,
                          **SAMPLING)
    b = decoding.generate(model, ids, attention_mask=mask, seed=1, return_dict_in_generate=True, trace=True,
                          **dict(SAMPLING, temperature=1.3))
    d = decoding.diff(a, b)
    assert d.step is not None and d.stage == "temperature" and d.stage_step == 0
    html = render_report(a.trace.to_dict(), b.trace.to_dict(), divergence=d)
    assert f"diverges: row {d.row} at step {d.step}" in html
    assert html.count('class="tok div"') == 2                    # the diverging token, marked in both columns
