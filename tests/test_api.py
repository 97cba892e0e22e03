"""The public API: a small top level for the drop-in door, complete sub-packages for the research door."""

import importlib
import pkgutil
import warnings

import pytest

import decoding


def test_the_top_level_is_small_and_every_name_resolves():
    assert len(decoding.__all__) <= 32   # 30, plus PhrasalConstraint / DisjunctiveConstraint (constrained beam search)
    assert len(set(decoding.__all__)) == len(decoding.__all__)
    for name in decoding.__all__:
        assert getattr(decoding, name) is not None


def submodules(package):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield info.name


def test_no_submodule_is_shadowed_by_a_function_of_its_name():
    """``decoding.X`` is the module ``decoding/X.py`` whenever that module exists (the old
    ``decoding.chat.chat_prompt`` failed: ``decoding.chat`` was the function)."""
    for name in submodules(decoding):
        module = importlib.import_module(name)
        parent, _, leaf = name.rpartition(".")
        assert getattr(importlib.import_module(parent), leaf) is module, name


def test_the_documented_module_paths_work():
    assert callable(decoding.conversation.chat_prompt)
    assert callable(decoding.generation.prepare_call)
    assert decoding.comparison.Comparison is decoding.Comparison
    assert callable(decoding.strategies.contract.run_strategy)
    assert decoding.strategies.call.PreparedCall is decoding.strategies.PreparedCall
    assert decoding.score is decoding.insight.scoring.score is decoding.insight.score


@pytest.mark.parametrize("package", ["decoding.strategies", "decoding.processors", "decoding.stopping",
                                     "decoding.strategies.beam", "decoding.strategies.speculative"])
def test_each_research_package_lists_what_it_exports(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_moved_names_still_work_for_one_release_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = decoding.ModelRunner
    assert runner is decoding.runner.ModelRunner
    assert any(issubclass(w.category, DeprecationWarning) and "decoding.runner.ModelRunner" in str(w.message)
               for w in caught)
    with pytest.raises(AttributeError, match="no attribute 'generat'"):
        decoding.generat
