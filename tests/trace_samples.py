"""Trace dicts in the ``decoding.trace/1`` form, built from real runs of a tiny model (for the report tests).

The token ids are what ``decoding.generate`` chose; each stage's candidates and probabilities are
computed from the run's own logits, passed through the call's pipeline one processor at a time; the
texts come from the local byte-level tokenizer. Beam steps come from ``output_beam_tree``.
"""

from __future__ import annotations

import torch

import decoding
from decoding.inputs import left_pad
from tests.models import PAD, tiny_model
from tests.tokenizer import byte_tokenizer

TOP = 10


def _candidates(scores: torch.Tensor, chosen: int) -> dict:
    """One stage of one row: ``scores`` ``[vocab]`` float32."""
    probs = torch.softmax(scores, -1)
    order = torch.argsort(scores, descending=True, stable=True)
    finite = torch.isfinite(scores)
    top = [{"token": int(t), "logit": float(scores[t]) if finite[t] else None, "prob": float(probs[t])}
           for t in order[:TOP]]
    rank = int((scores > scores[chosen]).sum()) if finite[chosen] else None
    return {"alive": int(finite.sum()), "chosen_rank": rank, "chosen_logit": float(scores[chosen]) if finite[chosen]
            else None, "chosen_prob": float(probs[chosen]), "top": top}


def _texts(tok, ids) -> dict:
    """Each id's text; ids past the tokenizer's vocabulary (the model has 512) have none (null)."""
    return {str(i): tok.decode([i]) if i < len(tok) else None for i in sorted(set(ids))}


def sample_trace(texts=("The cat sat", "A & B <c>"), seed: int = 3, max_new_tokens: int = 8, **kwargs) -> dict:
    """A greedy (default) or sampled run of the tiny llama on ``texts``, as a trace dict."""
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids, mask = left_pad([tok(t)["input_ids"] for t in texts], PAD)
    torch.manual_seed(seed)
    out = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=PAD,
                            eos_token_id=None, return_dict_in_generate=True, output_logits=True, **kwargs)
    pipeline = decoding.pipeline(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)
    prompt_length = ids.shape[1]
    steps, seen = [], ids[mask.bool()].tolist()
    for t, logits in enumerate(out.logits):
        rows = []
        for row in range(ids.shape[0]):
            chosen = int(out.sequences[row, prompt_length + t])
            scores, stages = logits[row].clone(), []
            stages.append({"name": "raw", **_candidates(scores, chosen)})
            for processor in pipeline:
                scores = processor(out.sequences[row:row + 1, :prompt_length + t], scores[None].clone())[0]
                stages.append({"name": type(processor).__name__, **_candidates(scores, chosen)})
            probs = torch.softmax(scores, -1)
            logp = torch.log_softmax(scores, -1)
            entropy = float(-(probs * logp.masked_fill(probs == 0, 0)).sum())
            below = float(probs[:chosen].sum())   # an inverse-CDF draw picks `chosen` for u in [below, below + p)
            random = below + float(probs[chosen]) / 2 if kwargs.get("do_sample") else None
            rows.append({"row": row, "chosen": chosen, "entropy": entropy, "random": random, "stages": stages})
            seen += [chosen] + [c["token"] for s in stages for c in s["top"]]
        steps.append({"step": t, "rows": rows, "beams": None, "draft": None})
    return {"format": "decoding.trace/1", "strategy": "sample" if kwargs.get("do_sample") else "greedy",
            "stages": ["raw"] + [type(p).__name__ for p in pipeline],
            "prompt": [r[m.bool()].tolist() for r, m in zip(ids, mask)], "prompt_text": list(texts),
            "token_text": _texts(tok, seen), "steps": steps}


def beam_trace(text: str = "Once upon", num_beams: int = 3, max_new_tokens: int = 5) -> dict:
    """A beam search run of the tiny llama: rows from :func:`sample_trace`'s way, beams from the search tree."""
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids = torch.tensor([tok(text)["input_ids"]])
    out = decoding.generate(model, ids, max_new_tokens=max_new_tokens, num_beams=num_beams, pad_token_id=PAD,
                            eos_token_id=None, return_dict_in_generate=True, output_scores=True,
                            output_beam_tree=True)
    tree = out.trace["beam_tree"]
    steps, previous, seen = [], {}, ids[0].tolist()
    for t in range(len(out.scores)):
        live = [n for n in tree if n["step"] == t and n["status"] in ("running", "finished")]
        beams = [{"beam": k, "parent": previous.get(n["parent"], 0), "token": n["token"], "score": n["log_prob"],
                  "finished": n["status"] == "finished"} for k, n in enumerate(live)]
        previous = {n["id"]: k for k, n in enumerate(live)}
        rows = []
        for k, n in enumerate(live[:num_beams]):
            scores = out.scores[t][n["beam_index"]]
            stage = {"name": "raw", **_candidates(scores, n["token"])}
            rows.append({"row": k, "chosen": n["token"], "entropy": None, "random": None, "stages": [stage]})
            seen += [n["token"]] + [c["token"] for c in stage["top"]]
        steps.append({"step": t, "rows": rows, "beams": beams, "draft": None})
    return {"format": "decoding.trace/1", "strategy": "beam_search", "stages": ["raw"], "prompt": ids.tolist(),
            "prompt_text": [text], "token_text": _texts(tok, seen), "steps": steps}


def speculative_trace() -> dict:
    """A greedy run with draft rounds laid over it: every third step ends a round of three drafted tokens,
    the first two the tokens greedy chose (accepted), the third another (rejected), corrected by greedy's."""
    trace = sample_trace(texts=("The cat sat",), max_new_tokens=9)
    chosen = [step["rows"][0]["chosen"] for step in trace["steps"]]
    for t in range(2, len(chosen), 3):
        wrong = trace["steps"][t]["rows"][0]["stages"][0]["top"][1]["token"]
        trace["steps"][t]["draft"] = [{"row": 0, "drafted": [chosen[t - 2], chosen[t - 1], wrong], "accepted": 2,
                                       "correction": chosen[t]}]
    trace["strategy"] = "speculative"
    return trace
