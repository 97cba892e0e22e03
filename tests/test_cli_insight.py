"""The command line's --logprobs, --json and --show-pipeline, on the built-in model (in-process)."""

import json
import math

import pytest
import torch

import decoding
from decoding import cli


def test_logprobs_and_show_pipeline(builtin, builtin_dir, capsys):
    status = cli.main(["generate", "The capital of France is", "--raw", "--model", str(builtin_dir),
                       "--max-new-tokens", "4", "--logprobs", "3", "--show-pipeline", "--repetition-penalty", "1.2",
                       "--do-sample", "--top-k", "5", "--seed", "0"])
    out = capsys.readouterr()
    assert status == 0, out.err
    pipeline = [line.strip() for line in out.err.splitlines() if line.startswith("  ")]
    assert out.err.count("[decoding] pipeline (2 processor(s), applied in this order):") == 1
    assert pipeline[0].startswith("1. RepetitionPenaltyLogitsProcessor(") and "penalty=1.2" in pipeline[0]
    assert pipeline[1].startswith("2. TopKLogitsWarper(top_k=5")

    answer, table = out.out.split("step  token", 1)
    header, *rows = table.splitlines()
    assert answer.startswith(" Paris") and header.split() == ["p", "raw", "p", "top", "alternatives"]
    assert len(rows) == 4
    model, tokenizer = builtin
    prompt = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    decoder = json.JSONDecoder()
    parsed = []
    for line in rows:
        token, end = decoder.raw_decode(line[6:])
        parsed.append((int(line[:4]), token, *map(float, line[6 + end:].split()[:2])))
    new = torch.tensor([[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t))[0] for _, t, _, _ in parsed]])
    assert tokenizer.decode(new[0]) == answer.rstrip("\n") or answer.startswith(tokenizer.decode(new[0]).rstrip())
    scored = decoding.score(model, torch.cat([prompt, new], 1), prompt.shape[1], repetition_penalty=1.2,
                            do_sample=True, top_k=5)
    for step, (number, token, p, raw) in enumerate(parsed):
        assert number == step and token == tokenizer.decode([int(new[0, step])])
        assert math.isclose(p, scored.logprobs[0, step].exp().item(), abs_tol=2e-4)     # what decoding.score says
        assert math.isclose(raw, scored.raw_logprobs[0, step].exp().item(), abs_tol=2e-4)
    assert all(line.count('" 0.') + line.count('" 1.') == 3 for line in rows)   # 3 alternatives each


def test_json_writes_the_whole_result_with_beams_and_compare(builtin_dir, tmp_path, capsys):
    path = tmp_path / "result.json"
    status = cli.main(["generate", "What is the capital of France?", "--model", str(builtin_dir), "--num-beams", "2",
                       "--max-new-tokens", "4", "--compare", "--json", str(path)])
    out = capsys.readouterr()
    assert status == 0, out.err
    result = json.loads(path.read_text(encoding="utf-8"))
    assert result["identical_to_reference"] is True and result["settings"]["num_beams"] == 2
    assert result["sequences"][0] == result["prompt_ids"] + result["new_ids"]
    assert "".join(t["text"] for t in result["tokens"]).startswith(result["text"][:5])
    assert [t["id"] for t in result["tokens"]] == result["new_ids"]
    assert all(len(t["top"]) == cli.JSON_TOP and t["top"][0]["prob"] >= t["top"][-1]["prob"] for t in result["tokens"])
    assert result["sequence_score"] is not None and result["sequence_score"] < 0
    assert math.isclose(result["total_logprob"], sum(math.log(t["prob"]) for t in result["tokens"]), rel_tol=1e-6)


def test_json_to_stdout(builtin_dir, capsys):
    status = cli.main(["generate", "The capital of France is", "--raw", "--model", str(builtin_dir),
                       "--max-new-tokens", "2", "--json", "-"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert status == 0 and result["text"] == " Paris." and len(result["tokens"]) == 2


def test_logprobs_must_not_be_negative(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "hi", "--logprobs", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err


def test_trace_writes_the_report(builtin_dir, tmp_path, capsys):
    path = tmp_path / "report.html"
    status = cli.main(["generate", "What is the capital of France?", "--model", str(builtin_dir),
                       "--max-new-tokens", "5", "--do-sample", "--top-k", "20", "--temperature", "0.8", "--seed", "2",
                       "--compare", "--trace", str(path)])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert f"trace report written to {path} (5 steps)" in out.err
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    assert page.count('class="tok"') == 5 and ">temperature<" in page and ">top_k<" in page
    answer = out.out.split("compare with model.generate")[0]
    assert answer.strip() and answer.split()[-1] in page      # the streamed answer's tokens are the report's


def test_compare_command_prints_the_divergence_table(builtin_dir, tmp_path, capsys):
    status = cli.main(["compare", "The capital of France is", "--raw", "--model", str(builtin_dir),
                       "--max-new-tokens", "6", "--do-sample", "--top-k", "20", "--seed", "0"])
    out = capsys.readouterr()
    assert status == 0, out.err
    lines = out.out.splitlines()
    assert lines[0].startswith("model.generate: ") and lines[1].startswith("decoding.generate: ")
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    assert lines[2].startswith("seed 0: identical: 1 row(s) x 6 new tokens")

    status = cli.main(["compare", "The capital of France is", "--raw", "--model", str(builtin_dir),
                       "--max-new-tokens", "8", "--do-sample", "--top-k", "20", "--seed", "0",
                       "--against", "top-k=1", "--trace", str(tmp_path / "diff.html")])
    out = capsys.readouterr()
    assert status == cli.EXIT_DIFFERENT, out.err
    assert out.out.startswith("ours with top_k=1: ")
    assert "scores first differ at stage 'top_k' (new token 0, row 0)" in out.out
    assert "gap" in out.out and "side a" in out.out and "p=1.0000" in out.out
    page = (tmp_path / "diff.html").read_text(encoding="utf-8")
    assert "diff report written to" in out.err and "diverges: row 0 at step" in page
    assert page.count('class="tok div"') == 2 and "ours with top_k=1 vs decoding.generate" in page
    assert "Paris" in page                                      # token texts, not ids


def test_compare_against_must_be_key_value(builtin_dir, capsys):
    status = cli.main(["compare", "Hi", "--raw", "--model", str(builtin_dir), "--against", "top_k"])
    assert status == cli.EXIT_ERROR and "KEY=VALUE" in capsys.readouterr().err
    status = cli.main(["compare", "Hi", "--raw", "--model", str(builtin_dir), "--trace", "x.html"])
    assert status == cli.EXIT_ERROR and "--against" in capsys.readouterr().err
