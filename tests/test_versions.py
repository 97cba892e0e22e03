"""decoding/versions.py: the one place where reference-release differences are chosen.

These tests run in every environment .ci/run builds (transformers 4.55.4, 5.23.0 and 5.24.0), so each
switch is checked against the release it describes.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import warnings

import pytest
import torch
import transformers
from packaging.version import Version

import decoding
from decoding import versions
from decoding.errors import UnverifiedReferenceWarning
from tests.models import PAD, tiny_model

PACKAGE = pathlib.Path(decoding.__file__).parent


def test_the_installed_reference_is_a_verified_release():
    """CI only ever runs against the releases the project declares verified (constraints*.txt)."""
    assert str(versions.INSTALLED) in versions.VERIFIED
    assert Version(transformers.__version__) == versions.INSTALLED


def test_an_unverified_release_warns_once_by_name(monkeypatch):
    monkeypatch.setattr(versions, "INSTALLED", Version("5.99.0"))
    with pytest.warns(UnverifiedReferenceWarning, match=r"transformers 5\.99\.0 .* verified token for token"):
        versions.check_installed()
    monkeypatch.setattr(versions, "INSTALLED", Version("5.23.0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        versions.check_installed()


def test_no_other_module_reads_the_reference_version():
    """Only versions.py may look at transformers.__version__ (or compare releases)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "versions.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__version__" and \
                    isinstance(node.value, ast.Name) and node.value.id == "transformers":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "packaging.version":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_cache_keyword_is_the_one_the_installed_model_forward_takes():
    """The runner passes the cache under CACHE_KEYWORD; the installed models take it without a warning."""
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    cache = versions.new_dynamic_cache(model.config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model(input_ids=ids, use_cache=True, **{versions.CACHE_KEYWORD: cache})
    assert getattr(out, versions.CACHE_KEYWORD) is cache
    assert cache.get_seq_length() == 3
    assert (versions.CACHE_KEYWORD == "cache") == (versions.INSTALLED >= Version("5.24"))


def test_generate_passes_no_deprecated_cache_keyword():
    """A whole generation (greedy, beams, prompt lookup) under warnings-as-errors: no deprecated keyword."""
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    for kwargs in ({}, {"num_beams": 2}, {"prompt_lookup_num_tokens": 2}):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            out = decoding.generate(model, ids, max_new_tokens=4, pad_token_id=PAD, **kwargs)
        assert out.shape == (1, 9)


def test_dynamic_cache_constructor_matches_the_release():
    takes_config = "config" in inspect.signature(transformers.DynamicCache.__init__).parameters
    assert versions.CACHE_TAKES_CONFIG == takes_config
    cache = versions.new_dynamic_cache(tiny_model("llama").config)
    assert cache.get_seq_length() == 0


def test_beam_sampling_switch_matches_the_installed_reference():
    """The beam-sampling draw order switch gives the installed reference's tokens and beam indices."""
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7], [9, 10, 11]])
    kwargs = dict(max_new_tokens=6, do_sample=True, num_beams=3, top_k=0, pad_token_id=PAD,
                  return_dict_in_generate=True, output_scores=True)
    for seed in range(4):
        torch.manual_seed(seed)
        ref = model.generate(ids, **kwargs)
        torch.manual_seed(seed)
        ours = decoding.generate(model, ids, **kwargs)
        assert torch.equal(ours.sequences, ref.sequences)
        assert torch.equal(ours.beam_indices, ref.beam_indices)


def test_prefix_allowed_tokens_fn_sees_the_installed_references_batch_ids():
    """Sampling with several return sequences: the batch id each row is given, as the installed release gives it."""
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7], [9, 10, 11]])

    def run(generate):
        seen = []

        def allowed(batch_id, row_ids):
            seen.append(batch_id)
            return list(range(20, 40)) if batch_id == 0 else list(range(100, 120))
        torch.manual_seed(0)
        out = generate(ids, max_new_tokens=3, do_sample=True, num_return_sequences=3, pad_token_id=PAD,
                       prefix_allowed_tokens_fn=allowed)
        return out, seen

    ref, ref_seen = run(model.generate)
    ours, our_seen = run(lambda *a, **k: decoding.generate(model, *a, **k))
    assert torch.equal(ours, ref)
    assert our_seen == ref_seen
    assert max(ref_seen) == (1 if versions.PREFIX_ROWS_COUNT_RETURN_SEQUENCES else 5)


def test_repetition_penalty_padding_switch_matches_the_installed_reference():
    """Left-padded rows whose pad id the model likes: penalised (4.55) or not (5.x) as the installed release does."""
    model = tiny_model("gemma")
    ids = torch.tensor([[PAD, PAD, PAD, 245, 469], [94, 379, 43, 406, 67]])
    mask = (ids != PAD).long()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, repetition_penalty=3.0, pad_token_id=PAD,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    ref, ours = model.generate(ids, **kwargs), decoding.generate(model, ids, **kwargs)
    assert torch.equal(ours.sequences, ref.sequences)
    for r, o in zip(ref.scores, ours.scores, strict=True):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=0)
    penalised = ref.scores[0][0, PAD] != ref.logits[0][0, PAD]           # the padded row's first step
    assert bool(penalised) == (not versions.REPETITION_PENALTY_SKIPS_PADDING)
