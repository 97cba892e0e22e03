"""The per-step trace (decoding/insight/trace.py): its content against values computed by hand from the
tiny model's own forward pass, every strategy traced, the JSON round trip, and the report of a real trace."""

import math

import pytest
import torch

import decoding
from decoding.inputs import left_pad
from decoding.insight.report import render_report
from decoding.seeding import seeded_exponentials
from tests.models import PAD, tiny_model
from tests.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def batch():
    return left_pad([[5, 6, 7, 8], [9, 10]], PAD)


def hand_logits(model, ids, mask):
    """The next-token logits of each row ``[rows, vocab]`` float32, from one full forward (no cache)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()


def test_greedy_steps_equal_values_computed_by_hand(model):
    ids, mask = batch()
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, eos_token_id=None, pad_token_id=PAD,
                            repetition_penalty=1.5, return_dict_in_generate=True, trace=decoding.insight.Tracer(top=5))
    trace = out.trace
    assert trace.data["stages"] == ["raw", "repetition_penalty"]
    sequences = out.sequences
    for step in range(3):
        length = ids.shape[1] + step
        logits = hand_logits(model, sequences[:, :length], torch.cat([mask, torch.ones(2, step, dtype=mask.dtype)], 1))
        for row in range(2):
            entry = trace.steps[step]["rows"][row]
            raw, penalised = logits[row].clone(), logits[row].clone()
            seen = sequences[row, :length]
            seen = seen[torch.cat([mask[row], torch.ones(step, dtype=mask.dtype)]).bool()].unique()
            values = penalised[seen]
            penalised[seen] = torch.where(values < 0, values * 1.5, values / 1.5)
            chosen = int(sequences[row, length])
            assert entry["chosen"] == chosen == int(penalised.argmax())
            for stage, scores in zip(entry["stages"], (raw, penalised)):
                probs = torch.softmax(scores, -1)
                top = torch.argsort(scores, descending=True, stable=True)[:5].tolist()
                assert [c["token"] for c in stage["top"]] == top
                for c in stage["top"]:
                    assert c["logit"] == pytest.approx(float(scores[c["token"]]), abs=1e-4)
                    assert c["prob"] == pytest.approx(float(probs[c["token"]]), abs=1e-5)
                assert stage["alive"] == 512
                assert stage["chosen_rank"] == int((scores > scores[chosen]).sum())
                assert stage["chosen_prob"] == pytest.approx(float(probs[chosen]), abs=1e-5)
            p = torch.softmax(penalised, -1)
            assert entry["entropy"] == pytest.approx(float(-(p * p.log()).sum()), abs=1e-4)
            assert entry["random"] is None
            assert entry["stages"][1]["chosen_rank"] == 0


def test_sampling_stages_alive_counts_and_seeded_random_value(model):
    ids, mask = batch()
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None, pad_token_id=PAD,
                            do_sample=True, temperature=0.5, top_k=7, top_p=0.8, seed=11,
                            return_dict_in_generate=True, output_scores=True, output_logits=True, trace=True)
    trace = out.trace
    assert trace.data["stages"] == ["raw", "temperature", "top_k", "top_p"]
    for step, (logits, scores) in enumerate(zip(out.logits, out.scores)):
        for row in range(2):
            entry = trace.steps[step]["rows"][row]
            raw, warm = logits[row], logits[row] / 0.5
            kth = torch.topk(warm, 7).values[-1]
            topk = warm.masked_fill(warm < kth, -math.inf)
            stages = {s["name"]: s for s in entry["stages"]}
            assert stages["raw"]["alive"] == stages["temperature"]["alive"] == 512
            assert stages["top_k"]["alive"] == 7
            assert stages["top_p"]["alive"] == int(torch.isfinite(scores[row]).sum()) <= 7
            assert stages["temperature"]["chosen_logit"] == pytest.approx(float(warm[entry["chosen"]]), abs=1e-4)
            assert stages["top_k"]["chosen_prob"] == pytest.approx(
                float(torch.softmax(topk, -1)[entry["chosen"]]), abs=1e-5)
            final = torch.softmax(scores[row], -1)
            assert stages["top_p"]["chosen_prob"] == pytest.approx(float(final[entry["chosen"]]), abs=1e-6)
            # the seeded draw: argmax p / E with E ~ Exp(1) keyed by (seed, step); the trace keeps the winner's E
            noise = seeded_exponentials(512, [11 + row], [step])[0]
            assert entry["chosen"] == int((final / noise).argmax()) == int(out.sequences[row, ids.shape[1] + step])
            assert entry["random"] == pytest.approx(float(noise[entry["chosen"]]), rel=1e-6)
    filtered = [s for step in trace.steps for e in step["rows"] for s in e["stages"] if s["chosen_rank"] is None]
    assert filtered == []                                     # the chosen token always survived the pipeline


def test_finished_rows_are_not_traced_after_their_eos(model):
    ids, mask = batch()
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, pad_token_id=PAD,
                              eos_token_id=None)
    eos = int(plain[0, ids.shape[1] + 1])                     # row 0's second token ends row 0
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, pad_token_id=PAD, eos_token_id=eos,
                            return_dict_in_generate=True, trace=True)
    for row in range(2):
        generated = out.sequences[row, ids.shape[1]:].tolist()
        end = generated.index(eos) + 1 if eos in generated else len(generated)
        assert out.trace.chosen(row) == generated[:end]      # nothing traced for the padding after the eos
    assert out.trace.chosen(0)[-1] == eos and len(out.trace.chosen(0)) == 2


def _user_greedy(call):
    runner, state = call.new_runner(), call.new_state()
    logits = runner.prefill(call.input_ids)
    while True:
        scores = call.processors(state.sequences, logits)
        tokens = state.append(scores.argmax(dim=-1))
        if state.done:
            return call.finish(state, runner)
        logits = runner.step(tokens)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(do_sample=True, top_k=20),
    dict(do_sample=True, top_p=0.9, seed=4),
    dict(strategy=_user_greedy, repetition_penalty=1.3),
    dict(prompt_lookup_num_tokens=2),
], ids=["greedy", "sample", "seeded", "user", "prompt_lookup"])
def test_every_token_strategy_traces_the_tokens_it_chose(model, kwargs):
    ids, mask = (batch() if "prompt_lookup_num_tokens" not in kwargs else
                 (torch.tensor([[5, 6, 7, 5, 6, 7, 5]]), torch.ones(1, 7, dtype=torch.long)))
    torch.manual_seed(0)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD,
                            return_dict_in_generate=True, trace=True, **kwargs)
    torch.manual_seed(0)
    untraced = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None,
                                 pad_token_id=PAD, **kwargs)
    assert torch.equal(out.sequences, untraced)               # tracing changes nothing
    for row in range(ids.shape[0]):
        assert out.trace.chosen(row) == out.sequences[row, ids.shape[1]:].tolist()
    assert len(out.trace.steps) == 6


def test_speculation_with_a_draft_model_records_rounds(model):
    draft = tiny_model("llama", seed=1)
    ids = torch.tensor([[5, 6, 7, 8]])
    out = decoding.generate(model, ids, assistant_model=draft, max_new_tokens=8, eos_token_id=None, pad_token_id=PAD,
                            return_dict_in_generate=True, trace=True)
    assert out.trace.chosen(0) == out.sequences[0, 4:].tolist()
    rounds = [d for s in out.trace.steps for d in (s["draft"] or [])]
    stats = out.trace["speculation"]
    assert [d["accepted"] for d in rounds] == [a[0] for a in stats.accepted]
    assert sum(len(d["drafted"]) for d in rounds) == sum(p[0] for p in stats.proposed)
    assert out.trace.data["stages"] == ["raw", "processed"]


@pytest.mark.parametrize("do_sample", [False, True])
def test_beams_are_traced_with_parents_and_the_tree_still_works(model, do_sample):
    ids = torch.tensor([[5, 6, 7]])
    torch.manual_seed(1)
    out = decoding.generate(model, ids, max_new_tokens=4, num_beams=3, do_sample=do_sample, eos_token_id=None,
                            pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                            output_beam_tree=True, trace=True)
    trace = out.trace
    assert "beam_tree" in trace and trace["beam_tree"][0]["status"] == "prompt"
    for step in trace.steps:
        running = [b for b in step["beams"] if not b["finished"]]
        assert [b["beam"] for b in running] == [0, 1, 2]
        for entry, beam in zip(step["rows"], running):
            assert entry["chosen"] == beam["token"] and entry["parent"] == (beam["parent"] if step["step"] else 0)
            # the stage is the parent row's processed log-probs, as out.scores recorded them
            logp = out.scores[step["step"]][entry["parent"]]
            assert entry["stages"][0]["chosen_logit"] == pytest.approx(float(logp[entry["chosen"]]), abs=1e-5)
    # the best hypothesis is a path through the traced beams
    best = out.sequences[0, 3:].tolist()
    beam, path = None, []
    last = trace.steps[-1]["beams"]
    ends = [i for i, b in enumerate(last) if b["token"] == best[-1]]
    assert ends
    beam = ends[0]
    for step in reversed(trace.steps):
        b = step["beams"][beam]
        path.append(b["token"])
        beam = b["parent"]
    assert path[::-1] == best


def test_json_round_trip_table_and_report(model, tmp_path):
    ids, mask = batch()
    tok = byte_tokenizer()
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, eos_token_id=None, pad_token_id=PAD,
                            do_sample=True, top_k=5, seed=1, return_dict_in_generate=True,
                            trace=decoding.insight.Tracer(top=4, tokenizer=tok))
    trace = out.trace
    again = decoding.insight.Trace.from_json(trace.to_json())
    assert again == trace and again.to_dict() == trace.to_dict()
    path = tmp_path / "t.json"
    trace.to_json(path)
    assert decoding.insight.Trace.from_json(path) == trace
    # a filtered candidate's score is null in JSON
    top_k = [s for st in trace.steps for e in st["rows"] for s in e["stages"] if s["name"] == "top_k"][0]
    assert top_k["alive"] == 5 and top_k["top"][-1]["logit"] is not None
    text = trace.table(1)
    assert "step 1 (sample)" in text and "top_k: alive 5" in text and text.count("row ") >= 2
    with pytest.raises(IndexError, match="no step 9"):
        trace.table(9)
    html = trace._repr_html_()
    import re
    same_ids = (lambda h: re.sub(r"decoding-report-\d+", "R", h))
    assert same_ids(html) == same_ids(render_report(trace.to_dict()))
    assert html.count('class="tok"') == 6 and 'data-step="2" data-row="1"' in html
    first = trace.steps[0]["rows"][0]["chosen"]
    assert trace.data["token_text"][str(first)] == tok.decode([first])
    report = trace.write_report(tmp_path / "r.html")
    assert "<!DOCTYPE html>" in report.read_text()


def test_off_by_default_and_clear_errors(model):
    ids = torch.tensor([[5, 6, 7]])
    out = decoding.generate(model, ids, max_new_tokens=2, return_dict_in_generate=True)
    assert out.trace is None
    with pytest.raises(ValueError, match="return_dict_in_generate=True"):
        decoding.generate(model, ids, max_new_tokens=2, trace=True)
    tracer = decoding.insight.Tracer(top=2)
    sequences = decoding.generate(model, ids, max_new_tokens=2, trace=tracer)
    assert tracer.trace.chosen(0) == sequences[0, 3:].tolist()
    with pytest.raises(ValueError, match="new Tracer"):
        decoding.generate(model, ids, max_new_tokens=2, trace=tracer)
    with pytest.raises(TypeError, match="decoding.insight.Tracer"):
        decoding.generate(model, ids, max_new_tokens=2, return_dict_in_generate=True, trace="yes")
    with pytest.raises(ValueError, match="top"):
        decoding.insight.Tracer(top=0)
    assert decoding.pipeline(model, ids, trace=True, do_sample=True, top_k=3).names() == ["TopKLogitsWarper"]


from hypothesis import given                                                   # noqa: E402
from hypothesis import strategies as st                                        # noqa: E402

from tests.models import prompts                                               # noqa: E402


@given(arch=st.sampled_from(["llama", "gpt2", "qwen2", "gemma"]), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       params=st.fixed_dictionaries({"temperature": st.sampled_from([0.6, 1.0]), "top_k": st.sampled_from([0, 8]),
                                     "top_p": st.sampled_from([0.8, 1.0]),
                                     "repetition_penalty": st.sampled_from([1.0, 1.2])}),
       num_beams=st.sampled_from([1, 1, 2]), do_sample=st.booleans(), eos_pick=st.integers(0, 5))
def test_tracing_changes_nothing_and_agrees_with_the_outputs(arch, batch, seed, params, num_beams, do_sample, eos_pick):
    """Against the reference: a traced run gives model.generate's tokens; each traced row holds its own tokens up to
    its end, and the last stage's chosen score is what out.scores holds for it."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    eos = 3 + eos_pick * 7
    kwargs = dict(max_new_tokens=5, pad_token_id=PAD, eos_token_id=eos, do_sample=do_sample, num_beams=num_beams,
                  return_dict_in_generate=True, output_scores=True, **params)
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(seed)
    out = decoding.generate(model, ids, attention_mask=mask, trace=True, **kwargs)
    assert torch.equal(out.sequences, reference.sequences)
    trace, P = out.trace, ids.shape[1]
    if num_beams > 1:
        for step in trace.steps:
            for entry in step["rows"]:
                score = float(out.scores[step["step"]][entry["parent"], entry["chosen"]])
                assert entry["stages"][-1]["chosen_logit"] == pytest.approx(score, abs=1e-4)
        return
    for row in range(ids.shape[0]):
        generated = out.sequences[row, P:].tolist()
        end = generated.index(eos) + 1 if eos in generated else len(generated)
        assert trace.chosen(row) == generated[:end]
        for step, entry in enumerate(trace.row(row)):
            score = float(out.scores[step][row, entry["chosen"]])
            assert entry["stages"][-1]["chosen_logit"] == pytest.approx(score, abs=1e-5)
            assert entry["stages"][-1]["chosen_rank"] is not None


@pytest.mark.parametrize("kwargs", [dict(penalty_alpha=0.6, top_k=4), dict(dola_layers="low", repetition_penalty=1.2)],
                         ids=["contrastive", "dola"])
def test_contrastive_search_and_dola_are_traced(model, kwargs):
    ids = torch.tensor([[5, 6, 7, 8]])
    out = decoding.generate(model, ids, max_new_tokens=4, eos_token_id=None, pad_token_id=PAD,
                            return_dict_in_generate=True, trace=True, **kwargs)
    assert out.trace.chosen(0) == out.sequences[0, 4:].tolist() and len(out.trace.steps) == 4


@pytest.mark.parametrize("kwargs", [dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
                                    dict(num_beams=3, force_words_ids=[[50]])], ids=["diverse", "constrained"])
def test_diverse_and_constrained_beam_search_are_traced(model, kwargs):
    ids = torch.tensor([[5, 6, 7, 8]])
    out = decoding.generate(model, ids, max_new_tokens=4, eos_token_id=None, pad_token_id=PAD,
                            return_dict_in_generate=True, output_scores=True, trace=True, **kwargs)
    beams = kwargs["num_beams"]
    assert len(out.trace.steps) == 4
    for step in out.trace.steps:
        assert [e["row"] for e in step["rows"]] == list(range(beams)) == [b["beam"] for b in step["beams"]]
        for entry, beam in zip(step["rows"], step["beams"]):
            assert entry["chosen"] == beam["token"] and 0 <= entry["parent"] < beams
            if "num_beam_groups" in kwargs:        # out.scores holds each group's processed log-probs
                score = float(out.scores[step["step"]][entry["parent"], entry["chosen"]])
                assert entry["stages"][-1]["chosen_logit"] == pytest.approx(score, abs=1e-5)
    # the best sequence is a path through the traced running beams, unless it finished earlier
    best = out.sequences[0, 4:].tolist()
    last = [b for b in out.trace.steps[-1]["beams"] if b["token"] == best[-1]]
    paths = []
    for start in last:
        beam, path = start["beam"], []
        for step in reversed(out.trace.steps):
            b = step["beams"][beam]
            path.append(b["token"])
            beam = b["parent"]
        paths.append(path[::-1])
    assert best in paths
