"""Buffers grow with the generation: a huge ``max_new_tokens`` that an early eos makes moot costs nothing.

Every strategy returns the same tokens with ``max_new_tokens=10**6`` or ``10**8`` as with 20 when
eos comes first, and every per-token buffer it allocated (the runner's mask, the sequences, beam
search's ``[B, N, W]`` tensors, speculation's ragged rows) stays a few times the tokens generated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import decoding
import decoding.strategies.beam.run as beam_run
from decoding.runner import ModelRunner
from decoding.strategies.speculative.ragged import RaggedSequences
from decoding.strategies.state import SequenceState
from tests.models import PAD, prompts, tiny_model
from tests.reference import emitted

ROOT = Path(__file__).resolve().parent.parent
HUGE = [10**6, 10**8]
SEED = 3
STRATEGIES = {
    "greedy": {},
    "sampling": dict(do_sample=True, top_k=20),
    "beam search": dict(num_beams=3),
    "beam sampling": dict(num_beams=3, do_sample=True),
    "prompt lookup": dict(prompt_lookup_num_tokens=3),
    "draft model": dict(assistant_model=tiny_model("llama", seed=1)),
}
ONE_ROW = ("prompt lookup", "draft model")          # the reference's speculation takes one row


@pytest.fixture
def buffer_widths(monkeypatch):
    """Records the widths of the per-token buffers every strategy allocates: ``{kind: [widths]}``.

    Read after the call: each buffer may have been replaced by a wider one while it ran.
    """
    made: dict[str, list] = {"mask": [], "sequences": [], "beams": [], "ragged": []}

    def spy(cls, kind):
        original = cls.__init__

        def init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            made[kind].append(self)
        monkeypatch.setattr(cls, "__init__", init)

    spy(ModelRunner, "mask")
    spy(SequenceState, "sequences")
    spy(RaggedSequences, "ragged")
    start = beam_run.start
    monkeypatch.setattr(beam_run, "start", lambda *a, **k: made["beams"].append(start(*a, **k)) or made["beams"][-1])

    def widths():
        return {"mask": [r._mask.shape[-1] for r in made["mask"]],
                "sequences": [s._buffer.shape[-1] for s in made["sequences"]],
                "ragged": [s.buffer.shape[-1] for s in made["ragged"]],
                "beams": [t.shape[-1] for s in made["beams"] for t in (s.running_ids, s.finished_ids)]}
    return widths


def early_eos_call(strategy: str, seed: int = SEED):
    """``(model, ids, kwargs)``: eos ids chosen among the tokens a plain run (greedy, or sampling from the same
    seed) emits at steps 1 and 3, so that the run ends within a few steps (the tests check it: where a beam
    search ends is not certain)."""
    model = tiny_model("llama")
    ids, mask = prompts(1 if strategy in ONE_ROW else 2, seed)
    plain = STRATEGIES["sampling"] if strategy == "sampling" else {}
    eos = emitted(model, ids, mask, seed, 4, PAD, **plain)[:, [1, 3]].unique().tolist()
    return model, ids, dict(attention_mask=mask, eos_token_id=eos, pad_token_id=PAD, **STRATEGIES[strategy])


def run(model, ids, seed, **kwargs):
    torch.manual_seed(seed)
    return decoding.generate(model, ids, **kwargs)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_huge_max_new_tokens_with_an_early_eos(strategy, buffer_widths):
    model, ids, kwargs = early_eos_call(strategy)
    short = run(model, ids, SEED, max_new_tokens=20, return_dict_in_generate=True, output_scores=True, **kwargs)
    assert len(short.scores) < 20, "the eos must end the run early for this test to mean anything"
    short = short.sequences
    generated = short.shape[1] - ids.shape[1]
    torch.manual_seed(SEED)
    assert torch.equal(short, model.generate(ids, max_new_tokens=20, **kwargs))
    for huge in HUGE:
        assert torch.equal(run(model, ids, SEED, max_new_tokens=huge, **kwargs), short)
    widths = buffer_widths()
    bound = 2 * (ids.shape[1] + generated) + 2
    assert any(widths.values())
    for kind, found in widths.items():
        assert all(width <= bound for width in found), (kind, found, bound)


def test_greedy_and_sampling_match_the_reference_with_a_huge_limit():
    """The reference itself is cheap there: compare with it directly."""
    for strategy in ("greedy", "sampling"):
        model, ids, kwargs = early_eos_call(strategy, seed=3)
        torch.manual_seed(3)
        reference = model.generate(ids, max_new_tokens=10**8, **kwargs)
        assert torch.equal(run(model, ids, 3, max_new_tokens=10**8, **kwargs), reference)


def test_buffers_still_reach_a_long_generation(buffer_widths):
    """Many doublings later the tokens are still the reference's (no eos, 70 tokens), and no buffer has
    doubled past the call's max_length (the reference's own tensors end exactly that wide)."""
    model = tiny_model("gpt2")
    ids, mask = prompts(2, 4)
    for knobs in ({}, dict(num_beams=2)):
        kwargs = dict(attention_mask=mask, max_new_tokens=70, eos_token_id=None, pad_token_id=PAD, **knobs)
        assert torch.equal(decoding.generate(model, ids, **kwargs), model.generate(ids, **kwargs))
    widths = buffer_widths()
    assert widths["mask"] and widths["sequences"] and widths["beams"]
    for kind in ("mask", "sequences", "beams"):
        assert all(width <= ids.shape[1] + 70 for width in widths[kind]), (kind, widths[kind])
    one = dict(max_new_tokens=70, eos_token_id=None, pad_token_id=PAD, prompt_lookup_num_tokens=2)
    assert torch.equal(decoding.generate(model, ids[:1, -3:], **one), model.generate(ids[:1, -3:], **one))


PEAK_RSS = textwrap.dedent("""
    import resource, sys, warnings
    import torch
    warnings.filterwarnings("ignore")
    import decoding
    from tests.models import tiny_model
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    kinds = [{}, dict(do_sample=True), dict(num_beams=3), dict(prompt_lookup_num_tokens=3)]
    eos = decoding.generate(model, ids, max_new_tokens=3, eos_token_id=None, pad_token_id=0)[0, -1].item()
    for kwargs in kinds:                      # warm up: allocator pools, thread pools, lazy imports
        decoding.generate(model, ids, max_new_tokens=20, eos_token_id=eos, pad_token_id=0, **kwargs)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for kwargs in kinds:
        decoding.generate(model, ids, max_new_tokens=10**8, eos_token_id=eos, pad_token_id=0, **kwargs)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)   # ru_maxrss is in KiB on Linux
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_does_not_follow_max_new_tokens():
    """max_new_tokens=10**8 once cost ~800 MB of mask buffer alone; now the peak barely moves."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", PEAK_RSS], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    assert growth < 64 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"
