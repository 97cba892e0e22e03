"""The knobs table: what is derived from it, the docs it generates, the samplers' registration, and the
honest refusal of every keyword of the reference that `decoding` does not implement."""

import copy
import inspect
import re
from pathlib import Path

import pytest
import torch
import transformers
from transformers.generation.utils import GenerationMixin

import decoding
from decoding import checks, cli, config, knobs
from decoding.declarations import FIRST, LAST, PENALTY, WARPER, Knob, Sampler
from decoding.processors import BEYOND_PROCESSORS
from decoding.processors.base import LogitsProcessor
from decoding.processors.beyond import SAMPLERS, beyond_processors, beyond_warpers
from decoding.processors.orders import ORDERS, preset
from tests.models import tiny_model

ROOT = Path(__file__).resolve().parent.parent
IDS = torch.tensor([[5, 6, 7]])


@pytest.fixture
def model():
    m = tiny_model("llama")
    calls = []
    handle = m.register_forward_pre_hook(lambda *args: calls.append(1))
    m.forward_calls = calls
    yield m
    handle.remove()


# --- the table and what is derived from it -------------------------------------------------------

def test_config_fields_defaults_and_call_arguments_come_from_the_table():
    assert set(config.CONFIG_FIELDS) | set(config.CALL_ARGUMENTS) == set(knobs.KNOBS)
    assert not set(config.CONFIG_FIELDS) & set(config.CALL_ARGUMENTS)
    assert config.GLOBAL_DEFAULTS == {name: knobs.KNOBS[name].default for name in config.CONFIG_FIELDS
                                      if knobs.KNOBS[name].default is not None}
    assert set(config.NOT_YET_IMPLEMENTED) == set(knobs.REFUSED)


def test_defaults_are_the_references():
    reference = transformers.GenerationConfig._get_default_generation_params()
    for name, value in reference.items():
        if name in knobs.KNOBS:
            assert knobs.KNOBS[name].default == value, name
        else:
            assert knobs.REFUSED[name].is_off(value), name


def test_cli_flags_types_and_multi_values_come_from_the_table():
    assert cli.NOT_FLAGS == tuple(n for n in config.CONFIG_FIELDS if not knobs.KNOBS[n].flag)
    assert cli.MULTI_VALUE == {"stop_strings": str}
    args = cli.build_parser().parse_args(["generate", "hi", "--top-n-sigma", "1", "--dry-allowed-length", "3",
                                          "--logit-bias", "{5: -2.0}", "--early-stopping", "never"])
    assert (args.top_n_sigma, args.dry_allowed_length, args.logit_bias, args.early_stopping) == (1.0, 3, {5: -2.0},
                                                                                                   "never")


def test_companion_defaults_come_from_the_samplers_declarations():
    from decoding.processors.beyond import DEFAULTS
    assert DEFAULTS == {"dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1, "dynatemp_exponent": 1.0,
                        "xtc_threshold": 0.1, "mirostat_eta": 0.1}


def test_docs_api_holds_exactly_the_generated_tables():
    text = (ROOT / "docs" / "api.md").read_text()
    found = re.search(r"<!-- knobs table: begin[^\n]*-->\n(.*?)<!-- knobs table: end -->", text, re.S)
    assert found, "docs/api.md lost its knobs table markers"
    assert found.group(1) == knobs.markdown_tables(), (
        "docs/api.md is out of date: paste the output of decoding.knobs.markdown_tables() between its markers")


def test_write_docs_rewrites_only_the_tables(tmp_path):
    copy_of_api = tmp_path / "api.md"
    original = (ROOT / "docs" / "api.md").read_text()
    stale = original.replace("sample among the k most likely tokens only", "an outdated help line")
    assert stale != original
    copy_of_api.write_text(stale)
    knobs.write_docs(str(copy_of_api))
    assert copy_of_api.read_text() == original


def test_every_check_names_its_knob_and_refuses_before_any_forward(model):
    bad = {"watermarking_config": {"greenlist_ratio": 2.0}}   # any object: its missing fields take defaults
    for name, knob in knobs.KNOBS.items():
        if knob.check is None:
            continue
        with pytest.raises(ValueError, match=f"`{name}"):
            knob.validate(bad.get(name, object()))
    with pytest.raises(ValueError, match="xtc_threshold"):
        decoding.generate(model, IDS, max_new_tokens=2, xtc_threshold=0.7)
    assert model.forward_calls == []


def test_the_check_primitives():
    assert checks.is_int(3) and not checks.is_int(True) and not checks.is_int(3.0)
    assert checks.is_real(1.5) and not checks.is_real(float("nan")) and not checks.is_real(False)
    assert checks.is_finite(2) and not checks.is_finite(float("inf"))
    assert checks.is_token_id(0) and not checks.is_token_id(-1) and not checks.is_token_id(True)
    rule = checks.interval("has to be a number in [0, 1)", 0, 1, high_open=True)
    assert rule.values == "[0, 1)"
    with pytest.raises(ValueError, match=r"^`x` has to be a number in \[0, 1\), but is 1\.$"):
        rule("x", 1)


def test_unknown_keywords_get_hints_from_the_table(model):
    with pytest.raises(decoding.UnknownArgumentError, match="did you mean 'top_n_sigma'"):
        decoding.generate(model, IDS, max_new_tokens=2, top_n_sigmaa=1.0)
    with pytest.raises(decoding.UnknownArgumentError, match="did you mean 'output_beam_tree'"):
        decoding.generate(model, IDS, max_new_tokens=2, output_beam_trees=True)


# --- samplers: one module plus one registration ----------------------------------------------------

def test_registered_samplers_are_the_beyond_processors_and_their_knobs_are_in_the_table():
    assert BEYOND_PROCESSORS == tuple(s.processor for s in SAMPLERS)
    for sampler in SAMPLERS:
        assert getattr(decoding.processors, sampler.processor.__name__) is sampler.processor
        for knob in sampler.knobs:
            assert knobs.KNOBS[knob.name] is knob and knob.group == "beyond the reference"
        for engine in ("vllm", "llama.cpp", "mlx"):
            assert (sampler.name in ORDERS[engine]) == (sampler.places.get(engine) is not None)


class _Halve(LogitsProcessor):
    """A toy sampler for the registration tests: halves the scores."""

    name = "halve"

    def __call__(self, input_ids, scores):
        return scores / 2


def _toy(stage, places):
    return Sampler(_Halve, knobs=(Knob("halve", "beyond the reference", "halve the scores", type=float),),
                   build=lambda s, c: _Halve() if getattr(s, "halve", None) else None, stage=stage, places=places)


def test_a_new_sampler_is_placed_by_its_declaration_in_every_preset():
    toy = _toy(WARPER, {"vllm": LAST, "llama.cpp": "before top_k", "mlx": FIRST})
    samplers = SAMPLERS + (toy,)
    assert preset("hf", samplers)[:-2][-1] == "halve"               # after every warper, before the finishers
    assert preset("vllm", samplers)[-3] == "halve"                   # last of the samplers
    llama = preset("llama.cpp", samplers)
    assert llama.index("halve") == llama.index("top_k") - 1
    assert preset("mlx", samplers)[:2] == ["logit_bias", "halve"]     # the fronts in registration order
    assert [n for n in preset("vllm", samplers) if n != "halve"] == ORDERS["vllm"]


def test_a_new_sampler_is_built_by_its_stage(monkeypatch):
    import decoding.processors.beyond as beyond

    class Settings:
        halve = 1.0
    for name in knobs.KNOBS:
        setattr(Settings, name, None)
    Settings.halve = 1.0
    monkeypatch.setattr(beyond, "SAMPLERS", (_toy(PENALTY, {}),))
    assert [p.name for p in beyond_processors(Settings, None)] == ["halve"]
    monkeypatch.setattr(beyond, "SAMPLERS", (_toy(WARPER, {}),))
    assert [p.name for p in beyond_warpers(Settings, None, [])] == ["halve"]


def test_a_sampler_declaration_is_checked():
    with pytest.raises(ValueError, match="first knob"):
        Sampler(_Halve, knobs=(Knob("other", "beyond the reference", "x"),), build=None, stage=WARPER)
    with pytest.raises(ValueError, match="stage"):
        _toy("sampler", {})
    with pytest.raises(ValueError, match="place"):
        _toy(WARPER, {"vllm": "next to top_k"})
    with pytest.raises(ValueError, match="not in the preset"):
        preset("vllm", SAMPLERS + (_toy(WARPER, {"vllm": "after no_such_sampler"}),))


# --- honest refusals --------------------------------------------------------------------------------

def reference_keywords() -> list[str]:
    """Every keyword ``model.generate`` reads in transformers 5.23, found by introspection."""
    fields = set(transformers.GenerationConfig().to_dict()) - {"_from_model_config", "transformers_version"}
    parameters = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
    source = inspect.getsource(GenerationMixin.generate) + inspect.getsource(
        GenerationMixin._extract_generation_mode_kwargs)
    popped = set(re.findall(r'kwargs\.pop\("(\w+)"', source))
    model_inputs = {"input_ids", "attention_mask", "past_key_values", "inputs_embeds"}
    return sorted(fields | parameters | popped | model_inputs)


# A value that turns each refused keyword on (the rest get a string no default equals).
ON = {"num_beam_groups": 2, "diversity_penalty": 0.5,
      "constraints": ["a constraint"], "force_words_ids": [[5]], "token_healing": True, "use_mtp": True,
      "speculation_type": "dflash", "assistant_ensemble_weight": 0.5, "assistant_lookbehind": 5,
      "target_lookbehind": 5, "inputs_embeds": torch.zeros(1, 3, 64),
      "cache_implementation": "static", "max_cache_len": 64, "prefill_chunk_size": 2, "is_assistant": True,
      "decoder_start_token_id": 0, "synced_gpus": True, "trust_remote_code": True}


def test_every_reference_keyword_is_accepted_or_refused():
    accepted = set(knobs.KNOBS) | {"input_ids", "attention_mask"}
    keywords = reference_keywords()
    assert {"penalty_alpha", "dola_layers", "cache_implementation", "token_healing", "assistant_tokenizer",
            "use_mtp", "custom_generate", "synced_gpus"} <= set(keywords)
    unclassified = [name for name in keywords if name not in accepted and name not in knobs.REFUSED]
    assert not unclassified, f"declare these in decoding/knobs.py (KNOBS or REFUSED): {unclassified}"
    assert set(knobs.REFUSED) <= set(keywords), "REFUSED names a keyword the reference does not have"


@pytest.mark.parametrize("name", sorted(knobs.REFUSED))
def test_each_refused_keyword_raises_not_implemented_naming_it(model, name):
    if set(knobs.REFUSED[name].off) == {True, False}:   # disable_compile: no value changes what decoding does
        decoding.generate(model, IDS, max_new_tokens=1, **{name: True})
        return
    value = ON.get(name, "on")
    with pytest.raises(NotImplementedError, match=rf"`{name}=.*docs/strategies\.md"):
        decoding.generate(model, IDS, max_new_tokens=2, **{name: value})
    with pytest.raises(NotImplementedError, match=f"`{name}="):
        decoding.pipeline(model, IDS, **{name: value})
    assert model.forward_calls == []


@pytest.mark.parametrize("name", sorted(knobs.REFUSED))
def test_the_references_default_passes(model, name):
    refused = knobs.REFUSED[name]
    for value in (None, refused.default, *refused.off):
        out = decoding.generate(model, IDS, max_new_tokens=1, **{name: value})
        assert out.shape == (1, 4)


def test_penalty_alpha_with_sampling_is_refused_not_answered_with_a_hint(model):
    """penalty_alpha is a knob now (contrastive search); what the reference would silently drop is a ValueError."""
    with pytest.raises(ValueError, match=r"penalty_alpha.*contrastive search.*do_sample=True") as info:
        decoding.generate(model, IDS, max_new_tokens=2, penalty_alpha=0.6, top_k=4, do_sample=True)
    assert "did you mean" not in str(info.value)
    assert model.forward_calls == []


def test_refusals_from_a_generation_config():
    model = copy.deepcopy(tiny_model("llama"))
    with pytest.raises(NotImplementedError, match=r"token_healing=True.*in generation_config"):
        decoding.generate(model, IDS, max_new_tokens=2,
                          generation_config=transformers.GenerationConfig(token_healing=True))
    # the keyword wins over the config, as for every other knob
    decoding.generate(model, IDS, max_new_tokens=2, token_healing=False,
                      generation_config=transformers.GenerationConfig(token_healing=True))
    defaults = transformers.GenerationConfig(num_beam_groups=1, diversity_penalty=0.0, low_memory=False)
    decoding.generate(model, IDS, max_new_tokens=2, generation_config=defaults)


def test_group_beam_knobs_once_refused_now_come_from_a_generation_config():
    """num_beam_groups / diversity_penalty were refused before diverse beam search; a config's values now count."""
    model = copy.deepcopy(tiny_model("llama"))
    config = transformers.GenerationConfig(num_beam_groups=2, num_beams=2, diversity_penalty=1.0)
    assert torch.equal(decoding.generate(model, IDS, max_new_tokens=3, generation_config=config),
                       decoding.generate(model, IDS, max_new_tokens=3, num_beams=2, num_beam_groups=2,
                                         diversity_penalty=1.0))
    with pytest.raises(ValueError, match=r"num_beam_groups=2.*diversity_penalty"):   # groups without a penalty
        decoding.generate(model, IDS, max_new_tokens=2,
                          generation_config=transformers.GenerationConfig(num_beam_groups=2, num_beams=2))
    # the keyword wins over the config, as for every other knob
    decoding.generate(model, IDS, max_new_tokens=2, num_beam_groups=1,
                      generation_config=transformers.GenerationConfig(num_beam_groups=2))


def test_model_generation_config_refuses_what_changes_tokens_and_ignores_the_rest():
    model = copy.deepcopy(tiny_model("llama"))
    plain = decoding.generate(model, IDS, max_new_tokens=4)
    model.generation_config.prefill_chunk_size = 2   # a checkpoint may carry it: same tokens
    assert torch.equal(decoding.generate(model, IDS, max_new_tokens=4), plain)
    with pytest.raises(NotImplementedError, match="prefill_chunk_size"):   # asked for in the call: refused
        decoding.generate(model, IDS, max_new_tokens=4, prefill_chunk_size=2)
    model.generation_config.token_healing = True
    with pytest.raises(NotImplementedError, match=r"token_healing=True.*model\.generation_config.*= None"):
        decoding.generate(model, IDS, max_new_tokens=4)
    decoding.generate(model, IDS, max_new_tokens=4, token_healing=None)   # an explicit None overrides it
    model.generation_config.token_healing = None
    model.generation_config.dola_layers = "low"      # a knob now: the model's config turns DoLa on, as the reference
    assert torch.equal(decoding.generate(model, IDS, max_new_tokens=4),
                       decoding.generate(model, IDS, max_new_tokens=4, dola_layers="low"))
    assert torch.equal(decoding.generate(model, IDS, max_new_tokens=4, dola_layers=None), plain)


def test_inputs_is_the_references_name_for_input_ids(model):
    assert torch.equal(decoding.generate(model, inputs=IDS, max_new_tokens=3),
                       decoding.generate(model, IDS, max_new_tokens=3))
    with pytest.raises(ValueError, match="inputs.*input_ids"):
        decoding.generate(model, IDS, inputs=IDS, max_new_tokens=3)
