"""The command line: flags derived from the generation fields, and runs on the built-in model (a few in a
subprocess, as a user runs them; the others in-process through ``cli.main``)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decoding import cli
from decoding.config import CONFIG_FIELDS

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, stdin=None):
    """``python -m decoding ARGS`` from this checkout; returns the finished process (text output)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, "-m", "decoding", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=240)


def test_every_generation_field_is_a_flag():
    parser = cli.build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    dests = {action.dest for action in generate._actions}
    expected = [name for name in CONFIG_FIELDS if name not in cli.NOT_FLAGS and name not in cli._OWN_OPTIONS]
    assert expected and all(name in dests for name in expected)
    assert not set(cli.NOT_FLAGS) & dests


def test_flags_parse_to_typed_keywords_and_unset_flags_are_left_out():
    args = cli.build_parser().parse_args(
        ["generate", "hi", "--do-sample", "--temperature", "0.5", "--top-k", "7", "--top-p", "0.9",
         "--max-new-tokens", "4", "--stop-strings", ".", "!", "--eos-token-id", "[2, 7]", "--no-use-cache"])
    kwargs = {name: getattr(args, name) for name in args.generation_names if hasattr(args, name)}
    assert kwargs == dict(do_sample=True, temperature=0.5, top_k=7, top_p=0.9, max_new_tokens=4,
                          stop_strings=[".", "!"], eos_token_id=[2, 7], use_cache=False)


def test_a_new_generation_field_gets_a_flag_without_cli_changes(monkeypatch):
    monkeypatch.setattr(cli, "CONFIG_FIELDS", CONFIG_FIELDS + ("my_new_knob",))
    args = cli.build_parser().parse_args(["chat", "--message", "hi", "--my-new-knob", "3"])
    assert args.my_new_knob == 3


def test_generate_compare_on_the_builtin_model_in_a_subprocess(builtin_dir):
    # the README's first command (with a shorter budget)
    done = _run("generate", "What is the capital of France?", "--compare", "--max-new-tokens", "16")
    assert done.returncode == 0, done.stderr
    answer, summary = done.stdout.strip().splitlines()
    assert answer == "The capital of France is Paris."
    assert summary.startswith("compare with model.generate (seed 0): identical: 1 row(s) x 8 new tokens")


def test_chat_one_shot_sampled_with_compare_in_a_subprocess(builtin_dir):
    done = _run("chat", "--message", "Write one word about the sea.", "--model", str(builtin_dir), "--do-sample",
                "--temperature", "0.9", "--top-k", "50", "--seed", "4", "--max-new-tokens", "10", "--compare")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("compare with model.generate (seed 4): identical: 1 row(s) x ")
    assert "".join(lines[:-1]).strip()  # some text was streamed


def test_interactive_chat_keeps_the_history(builtin_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\nAnd of Italy?\n/exit\n"))
    status = cli.main(["chat", "--model", str(builtin_dir), "--max-new-tokens", "16"])
    out = capsys.readouterr()
    assert status == 0, out.err
    first, second = out.out.strip().splitlines()
    assert first == "The capital of France is Paris."
    assert "Rome" in second  # "Italy" alone is answered only through the first turn's context
    assert out.err.count("you> ") == 3


def test_generate_raw_continues_the_text(builtin_dir, capsys):
    status = cli.main(["generate", "The capital of France is", "--raw", "--model", str(builtin_dir),
                       "--max-new-tokens", "3"])
    out = capsys.readouterr()
    assert status == 0 and out.out.startswith(" Paris")


def test_errors_are_one_line_and_status_1(tmp_path, capsys):
    status = cli.main(["generate", "hi", "--model", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_ERROR
    assert err[-1].startswith("decoding: error: ModelNotFoundError: model ") and "missing" in err[-1]


def test_generate_with_beams_compares_with_the_reference(builtin_dir, capsys):
    status = cli.main(["generate", "What is the capital of France?", "--model", str(builtin_dir), "--num-beams", "3",
                       "--max-new-tokens", "12", "--compare"])
    out = capsys.readouterr()
    assert status == 0, out.err
    text, verdict = out.out.strip().splitlines()
    assert "Paris" in text
    assert verdict.startswith("compare with model.generate (seed 0): identical")


def test_a_strategy_from_a_file_runs_and_compares_with_the_reference(builtin_dir, capsys):
    status = cli.main(["generate", "What is the capital of France?", "--model", str(builtin_dir), "--strategy",
                       str(ROOT / "examples" / "plain_greedy.py") + ":greedy", "--max-new-tokens", "12", "--compare"])
    out = capsys.readouterr()
    assert status == 0, out.err
    text, verdict = out.out.strip().splitlines()
    assert text == "The capital of France is Paris."
    assert verdict.startswith("compare with model.generate (seed 0): identical")


@pytest.mark.parametrize("spec,error", [("nocolon", ValueError), ("json:no_such_function", ValueError),
                                        ("missing/file.py:f", FileNotFoundError), ("no_such_module_x:f", ImportError)])
def test_a_bad_strategy_spec_is_a_clear_error(spec, error):
    with pytest.raises(error, match="strategy|no_such_module_x"):
        cli.load_strategy(spec)


def test_a_branching_strategy_streams_its_answer(builtin_dir, capsys):
    status = cli.main(["generate", "What is the capital of France?", "--model", str(builtin_dir), "--strategy",
                       str(ROOT / "examples" / "cot_decoding.py") + ":cot_decoding", "--max-new-tokens", "12"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "Paris" in out.out


def test_a_keyword_decoding_does_not_implement_is_refused_by_name(capsys):
    status = cli.main(["generate", "hi", "--model", "/nonexistent/never-loaded", "--token-healing", "True"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_ERROR
    assert "unrecognized" not in " ".join(err)
    args = cli.build_parser().parse_args(["generate", "hi", "--penalty-alpha", "0.6", "--top-k", "4"])
    assert {n: getattr(args, n) for n in args.generation_names if hasattr(args, n)} == dict(penalty_alpha=0.6, top_k=4)
