"""The compiled path (decoding/compiled.py): when a call compiles, with what options, how often, and how
close its tokens stay to the eager static path's.

Compiling with inductor costs seconds per graph, so the equivalence cases are a fixed list (three row
counts, one cache bucket: three graphs), not hypothesis examples.
"""

import pytest
import torch
import transformers

import decoding
from decoding.compiled import (BUCKET, CPU_OPTIONS, _keep_templates, bucket_length, cacheable_wrapper, compile_count,
                               compile_options, compiled_step, template_first, templates_parsed_once, wants_compile)
from decoding.generation import prepare_call
from tests.models import prompts, tiny_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def everywhere(**fields):
    """A CompileConfig that compiles on the CPU too (the reference's ``_compile_all_devices``)."""
    config = transformers.CompileConfig(**fields)
    config._compile_all_devices = True
    return config


def test_bucket_length_rounds_up_to_a_multiple_of_the_bucket():
    assert [bucket_length(n) for n in (1, 63, 64, 65, 200)] == [64, 64, 64, 128, 256]
    assert bucket_length(10, bucket=16) == 16 and BUCKET == 64


@pytest.mark.parametrize("compile_, disable, config, static, device, expected", [
    (True, None, None, True, CPU, True),          # ours: on any device
    (True, True, None, True, CPU, False),         # disable_compile wins, as in the reference
    (False, None, everywhere(), True, CPU, False),
    (True, None, None, False, CPU, False),        # nothing to compile on without a static cache
    (None, None, None, True, CPU, False),         # the reference: not on the CPU unless told
    (None, None, transformers.CompileConfig(), True, CPU, False),
    (None, None, everywhere(), True, CPU, True),
    (None, None, None, True, CUDA, True),         # the reference: a static cache on an accelerator
    (None, True, None, True, CUDA, False),
    (None, None, None, False, CUDA, False),
])
def test_when_a_call_compiles(compile_, disable, config, static, device, expected):
    assert wants_compile(compile_, disable, config, static, device) is expected


def test_compile_options_are_the_compile_configs_fields():
    config = transformers.CompileConfig(fullgraph=True, dynamic=True, backend="eager", mode="max-autotune")
    assert compile_options(config, CPU) == {"fullgraph": True, "dynamic": True, "backend": "eager",
                                            "mode": "max-autotune"}
    with_options = compile_options(transformers.CompileConfig(options={"trace.enabled": False}), CPU)
    assert with_options["options"] == {"trace.enabled": False} and "mode" not in with_options
    template = {"freezing": True, "cpp_wrapper": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                "cpp.enable_concat_linear": True}
    assert compile_options(None, CPU)["options"] == template and "mode" not in compile_options(None, CPU)
    assert compile_options(None, CPU, rows=16)["options"] == template
    assert compile_options(None, CPU, rows=17)["options"] == {"freezing": True, "cpp_wrapper": True}
    assert compile_options(None, CUDA)["mode"] == "reduce-overhead"
    assert compile_options(None, CPU)["dynamic"] is False


def test_the_call_gets_a_compiled_step_only_when_it_compiles():
    model = tiny_model("llama")
    ids, mask = prompts(1, 0)
    common = dict(attention_mask=mask, max_new_tokens=3)
    assert prepare_call(model, ids, compile=True, disable_compile=True, **common).compiled is None
    assert prepare_call(model, ids, cache_implementation="static", **common).compiled is None
    assert prepare_call(model, ids, cache_implementation="static", compile_config=transformers.CompileConfig(),
                        **common).compiled is None
    call = prepare_call(model, ids, compile=True, **common)
    assert call.compiled is not None and decoding.caches.is_static(call.cache)
    assert call.cache.layers[0].max_cache_len % BUCKET == 0
    # one compiled callable per model and options, kept on the model
    assert call.compiled is prepare_call(model, ids, compile=True, **common).compiled
    assert call.compiled is compiled_step(model, compile_options(None, CPU))


def test_a_model_with_its_own_hooks_is_compiled_through_call():
    """Hooks registered on the model itself run in ``__call__``: the compiled step keeps them."""
    import copy
    model = copy.deepcopy(tiny_model("llama"))
    seen = []
    model.register_forward_hook(lambda module, args, kwargs_out: seen.append(1))
    ids, mask = prompts(1, 2)
    decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, compile=True,
                      compile_config=everywhere(backend="eager"))
    assert len(seen) == 4          # the prefill and the three compiled steps
    step = compiled_step(model, compile_options(everywhere(backend="eager"), CPU))
    assert not step.hookless and not step.trusted        # Python runs per step: guards always checked


#: compile=True's CPU options without the C++ GEMM template (TEMPLATE_OPTIONS): for the tests of the compiled
#: step's own mechanics (guards, freezing, cache marks), which do not depend on the products' kernels and
#: compile faster this way; the template is tested by the agreement test and the Gemma 2 test.
WITHOUT_TEMPLATE = {"fullgraph": False, "dynamic": False, "backend": "inductor", "options": dict(CPU_OPTIONS)}


def test_repeated_steps_skip_the_guards_once_seen_to_pass_them():
    """The second step of a generation checks the guards and compiles nothing: later ones skip them,
    and a new prompt batch (the first step of the next call) is checked in full again."""
    import copy
    model = copy.deepcopy(tiny_model("llama"))
    ids, mask = prompts(2, 5)
    first = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, compile=True,
                              compile_config=WITHOUT_TEMPLATE)
    step = compiled_step(model, compile_options(WITHOUT_TEMPLATE, CPU))
    assert step.hookless and len(step.trusted) == 1 and not step.untrusted
    eager = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, cache_implementation="static",
                              max_cache_len=BUCKET)
    assert torch.equal(first, eager)
    wider = prompts(3, 6)
    before = compile_count()
    decoding.generate(model, wider[0], attention_mask=wider[1], max_new_tokens=6, compile=True,
                      compile_config=WITHOUT_TEMPLATE)
    assert compile_count() == before + 1 and len(step.trusted) == 2     # three rows: a graph of its own


def test_a_changed_weight_compiles_again_with_frozen_weights():
    """Freezing makes the weights constants of the graph: a weight changed in place gets a new compiled step."""
    import copy
    model = copy.deepcopy(tiny_model("llama"))
    options = compile_options(None, CPU)
    first = compiled_step(model, options)
    assert compiled_step(model, options) is first
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    assert compiled_step(model, options) is not first


def test_frozen_weights_are_constants_of_the_graph(monkeypatch):
    """Freezing really takes effect (dynamo must trace with inductor's ``freezing`` set): a step kept past an
    in-place weight change still computes with the old weights, while the eager prefill sees the new ones.

    The step compiled again for the new weights has the same C++ source (no weight's address in it: a
    later process loads it from inductor's disk cache), and each step keeps its own weights."""
    import copy
    from torch._inductor.codecache import CppWrapperCodeCache
    from decoding.compiled import _weights_signature
    sources, load = [], CppWrapperCodeCache.load_pybinding
    monkeypatch.setattr(CppWrapperCodeCache, "load_pybinding",
                        lambda *args, **kwargs: sources.append(kwargs["main_code"]) or load(*args, **kwargs))
    model = copy.deepcopy(tiny_model("llama"))
    ids, mask = prompts(1, 4)
    common = dict(attention_mask=mask, max_new_tokens=4, compile=True, return_dict_in_generate=True,
                  output_logits=True, compile_config=WITHOUT_TEMPLATE)
    before = decoding.generate(model, ids, **common)
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    steps = model.__dict__["_decoding_compiled_steps"]
    key = repr(sorted(compile_options(WITHOUT_TEMPLATE, CPU).items()))    # compiled_step's key of these options
    step, _ = steps[key]
    steps[key] = (step, _weights_signature(model))          # keep the stale step on purpose
    stale = decoding.generate(model, ids, **common)
    assert torch.equal(stale.logits[0], 2 * before.logits[0])       # the prefill: eager, new weights
    assert torch.equal(stale.sequences, before.sequences)           # doubling the logits keeps the argmax
    assert torch.equal(stale.logits[1], before.logits[1])           # a decode step: frozen, old weights
    steps[key] = (step, None)                                       # as compiled_step left it: stale
    fresh = decoding.generate(model, ids, **common)                 # compiled_step builds a new step
    assert torch.allclose(fresh.logits[1], 2 * before.logits[1], rtol=1e-4, atol=1e-4)
    assert len(sources) == 2 and sources[0] == sources[1] and "_frozen_param0 device(type='cpu')" in sources[0]
    steps[key] = (step, _weights_signature(model))                  # the first step again: still its own weights
    assert torch.equal(decoding.generate(model, ids, **common).logits[1], before.logits[1])


def test_a_new_cache_is_not_frozen_into_the_graph():
    """The static cache marks its tensors with a static address; frozen, they would become constants: the
    compiled step takes the mark off each new cache, so consecutive calls each write their own cache."""
    model = tiny_model("llama")
    ids, mask = prompts(1, 6)
    first = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, compile=True,
                              return_dict_in_generate=True, compile_config=WITHOUT_TEMPLATE)
    second = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, compile=True,
                               return_dict_in_generate=True, compile_config=WITHOUT_TEMPLATE)
    assert torch.equal(first.sequences, second.sequences)
    assert all(not hasattr(layer.keys, "_dynamo_static_input_type") for layer in second.past_key_values.layers)


@pytest.mark.parametrize("kwargs, says", [
    (dict(use_cache=False), "use_cache=False"),
    (dict(cache_implementation="quantized", cache_config={"backend": "fp8"}), "cache_implementation='quantized'"),
    (dict(compile="yes"), "`compile` has to be True or False"),
    (dict(compile_config="fast"), "CompileConfig"),
])
def test_compile_without_a_static_cache_is_refused(kwargs, says):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=says):
        decoding.generate(model, prompts(1, 0)[0], max_new_tokens=2, **{"compile": True, **kwargs})


def test_compile_with_a_dynamic_cache_to_continue_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="past_key_values is a DynamicCache"):
        decoding.generate(model, prompts(1, 0)[0], max_new_tokens=2, compile=True,
                          past_key_values=transformers.DynamicCache())


def test_the_references_compile_config_gives_the_references_tokens():
    """The eager backend (no new kernels) with the reference's own compiled path on the same cache size."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    config = everywhere(backend="eager", fullgraph=True, dynamic=False)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=6, cache_implementation="static",
                             compile_config=config, max_cache_len=BUCKET, return_dict_in_generate=True,
                             output_logits=True)
    reference = model.generate(ids, attention_mask=mask, max_new_tokens=6, cache_implementation="static",
                               compile_config=config, max_cache_len=BUCKET, return_dict_in_generate=True,
                               output_logits=True)
    assert torch.equal(ours.sequences, reference.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, reference.logits))


#: The equivalence cases: (rows of the prompt batch, prompt seed, keywords). All fit one cache bucket.
#: The last has more rows than TEMPLATE_ROWS: its products are MKL's, not inductor's C++ template.
CASES = [(batch, seed, kwargs) for seed in range(4) for batch, kwargs in [
    (1, {}), (2, {}), (2, dict(do_sample=True, top_k=20, seed=seed)), (1, dict(num_beams=2)),
]] + [(6, 0, dict(num_beams=3))]


def test_compiled_tokens_agree_with_the_eager_static_path(capfd):
    """Inductor's kernels may round differently: the largest logit difference and the share of identical
    tokens are reported (-s), the share must be at least 99%, and where the logits are equal, so are the tokens.

    The model's steps compile here (those of earlier tests dropped), with one candidate per product where
    the template applies: inductor benchmarks nothing and prints no AUTOTUNE table."""
    from torch._dynamo.utils import counters
    model = tiny_model("llama")
    model.__dict__.pop("_decoding_compiled_steps", None)
    autotuned = counters["inductor"]["select_algorithm_autotune"]
    same = total = 0
    largest = 0.0
    for batch, seed, kwargs in CASES:
        ids, mask = prompts(batch, seed)
        common = dict(attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True, output_logits=True,
                      max_cache_len=BUCKET, **kwargs)
        eager = decoding.generate(model, ids, cache_implementation="static", **common)
        compiled = decoding.generate(model, ids, compile=True, **common)
        new = ids.shape[1]
        same += int((eager.sequences[:, new:] == compiled.sequences[:, new:]).sum())
        total += eager.sequences[:, new:].numel()
        difference = max(float((a - b).abs().max()) for a, b in zip(eager.logits, compiled.logits))
        largest = max(largest, difference)
        if difference == 0:
            assert torch.equal(eager.sequences, compiled.sequences)
    assert counters["inductor"]["select_algorithm_autotune"] == autotuned
    assert "AUTOTUNE" not in capfd.readouterr().err
    both = [repr(sorted(compile_options(None, CPU, rows).items())) for rows in (1, 18)]   # both kinds of product ran
    assert both[0] != both[1] and all(key in model._decoding_compiled_steps for key in both)
    print(f"compiled vs eager static: {same}/{total} tokens identical ({100 * same / total:.1f}%), largest logit "
          f"difference {largest:.3g}")
    assert same / total >= 0.99


def test_a_new_prompt_length_does_not_recompile():
    model = tiny_model("llama")
    ids, mask = prompts(1, 10, min_len=3, max_len=3)
    decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5, compile=True)
    before = compile_count()
    for length in (5, 9, 20):
        ids, mask = prompts(1, length, min_len=length, max_len=length)
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=5 + length, compile=True)
    assert compile_count() == before


def test_a_step_holds_more_shapes_than_dynamos_default_limit():
    """Dynamo's recompile limit (8 graphs per code object) would run the ninth shape eagerly: a compiled
    step traces new shapes under its own limit (RECOMPILE_LIMIT)."""
    import copy
    from decoding.compiled import RECOMPILE_LIMIT
    model = copy.deepcopy(tiny_model("llama"))
    config = everywhere(backend="eager", dynamic=False)     # one graph per shape, as compile=True's defaults
    before = compile_count()
    for rows in range(1, 11):                 # ten row counts: ten shapes
        ids, mask = prompts(rows, rows)
        decoding.generate(model, ids, attention_mask=mask, max_new_tokens=3, compile=True, compile_config=config)
    assert compile_count() - before == 10 and torch._dynamo.config.recompile_limit < 10 < RECOMPILE_LIMIT


def test_the_eager_path_never_runs_the_compiled_step():
    model = tiny_model("llama")
    ids, mask = prompts(2, 3)
    call = prepare_call(model, ids, attention_mask=mask, max_new_tokens=4, cache_implementation="static")
    assert call.new_runner().decode_forward is None
    reference = model.generate(ids, attention_mask=mask, max_new_tokens=4, cache_implementation="static")
    assert torch.equal(decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4,
                                         cache_implementation="static", compile=False), reference)


def test_products_take_the_cpp_template_where_it_applies_and_atens_kernel_elsewhere():
    from torch._inductor.select_algorithm import ExternKernelCaller
    template, aten = object(), object.__new__(ExternKernelCaller)     # the template's may come wrapped: not extern
    assert _keep_templates([aten, template]) == [aten, template]          # outside our compile: untouched
    with template_first():
        assert _keep_templates([aten, template]) == [template]            # one candidate: nothing benchmarked
        assert _keep_templates([aten]) == [aten]                          # the template does not apply
    with template_first(False):
        assert _keep_templates([aten, template]) == [aten, template]
    assert _keep_templates([aten, template]) == [aten, template]


def test_a_model_whose_attention_products_the_template_does_not_take_still_compiles():
    """Gemma 2's eager attention has products the C++ template refuses: they stay ATEN's (with the
    template as the only backend, inductor would fail with NoValidChoicesError)."""
    model = tiny_model("gemma2")
    ids, mask = prompts(1, 0)
    common = dict(attention_mask=mask, max_new_tokens=4, max_cache_len=BUCKET)
    eager = decoding.generate(model, ids, cache_implementation="static", **common)
    assert torch.equal(decoding.generate(model, ids, compile=True, **common), eager)


def test_compile_time_helpers_act_only_inside_their_block():
    """templates_parsed_once keeps one parsed Jinja template per source; cacheable_wrapper puts its C++
    wrapper generator in inductor's registry. Both put back what was there when the block ends."""
    from torch._inductor.codegen.common import KernelTemplate, device_codegens, init_backend_registration
    from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu
    source = "{{ rows }} x {{ columns }}"
    assert KernelTemplate._template_from_string(source) is not KernelTemplate._template_from_string(source)
    with templates_parsed_once():
        parsed = KernelTemplate._template_from_string(source)
        assert KernelTemplate._template_from_string(source) is parsed
        assert parsed.render(rows=2, columns=3) == "2 x 3"
    assert KernelTemplate._template_from_string(source) is not parsed
    init_backend_registration()
    with cacheable_wrapper():
        assert issubclass(device_codegens["cpu"].cpp_wrapper_codegen, CppWrapperCpu)
        assert device_codegens["cpu"].cpp_wrapper_codegen is not CppWrapperCpu
    assert device_codegens["cpu"].cpp_wrapper_codegen is CppWrapperCpu
