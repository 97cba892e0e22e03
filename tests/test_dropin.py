"""The drop-in door (issue 12): model inputs passed through, the reference's output classes, nothing
silently ignored, ``custom_generate`` folders; each against ``model.generate``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput

import decoding
from decoding.outputs import BeamGenerateOutput, GenerateOutput
from tests.models import PAD, VOCAB, tiny_model
from tests.reference import assert_same, both


def padded_prompts(lengths, seed=0):
    """``(ids, mask)``, ``[len(lengths), max(lengths)]`` int64, left-padded with PAD, ids in [3, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.full((len(lengths), longest), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, longest - n:] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, longest - n:] = 1
    return ids, mask


lengths = st.lists(st.integers(1, 6), min_size=1, max_size=3)


# ------------------------------------------------------------------------------------------------
# Output classes
# ------------------------------------------------------------------------------------------------

MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, top_k=20),
    "beams": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=2, do_sample=True),
    "lookup": dict(prompt_lookup_num_tokens=2),
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_output_class_is_the_references(name):
    model = tiny_model("llama")
    ids, mask = padded_prompts([4, 6])
    ids = ids if name != "lookup" else ids[:1, -6:]
    mask = mask if name != "lookup" else None
    reference, ours = both(model, ids, 0, attention_mask=mask, max_new_tokens=5, return_dict_in_generate=True,
                           output_scores=True, output_logits=True, **MODES[name])
    reference_class = type(reference)
    assert reference_class in (GenerateDecoderOnlyOutput, GenerateBeamDecoderOnlyOutput)
    assert isinstance(ours, reference_class)
    assert isinstance(ours, BeamGenerateOutput if reference_class is GenerateBeamDecoderOnlyOutput else GenerateOutput)
    assert set(reference.keys()) <= set(ours.keys()) | {"past_key_values"}
    assert_same(reference, ours, scores=name != "lookup")
    assert torch.equal(ours[0], ours.sequences) and "scores" in ours
    if reference_class is GenerateBeamDecoderOnlyOutput:
        assert torch.equal(reference.beam_indices, ours.beam_indices)
        torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores)


def test_extra_fields_reachable():
    model = tiny_model("llama")
    ids, _ = padded_prompts([6])
    beams = decoding.generate(model, ids, max_new_tokens=3, num_beams=2, return_dict_in_generate=True,
                              output_beam_tree=True)
    assert isinstance(beams, GenerateBeamDecoderOnlyOutput) and "beam_tree" in beams.trace
    lookup = decoding.generate(model, ids, max_new_tokens=3, prompt_lookup_num_tokens=2,
                               return_dict_in_generate=True)
    assert isinstance(lookup, GenerateDecoderOnlyOutput) and lookup.trace["speculation"].target_forwards >= 1
    assert "trace" in lookup.keys()
    for beams_like in (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5), dict(num_beams=2, force_words_ids=[[9]])):
        out = decoding.generate(model, ids, max_new_tokens=3, return_dict_in_generate=True, **beams_like)
        assert isinstance(out, GenerateBeamDecoderOnlyOutput), beams_like


# ------------------------------------------------------------------------------------------------
# Nothing silently ignored
# ------------------------------------------------------------------------------------------------

def run_both(model, ids, seed=0, **kwargs):
    """``(reference, ours)`` results, or the exception class each raised."""
    results = []
    for run in (lambda: model.generate(ids, **kwargs), lambda: decoding.generate(model, ids, **kwargs)):
        torch.manual_seed(seed)
        try:
            results.append(run())
        except Exception as error:   # noqa: BLE001 (the class is compared)
            results.append(type(error))
    return results


@pytest.mark.parametrize("extra", [dict(), dict(bad_words_ids=[[5], [7, 8]]), dict(min_new_tokens=3),
                                   dict(min_length=6), dict(num_beams=2), dict(do_sample=True, top_k=10),
                                   dict(prompt_lookup_num_tokens=2), dict(suppress_tokens=[4])])
@pytest.mark.parametrize("eos", [-1, [-1], [-1, 2]])
def test_eos_minus_one_accepted_wherever_the_reference_accepts_it(eos, extra):
    model = tiny_model("llama")
    ids, mask = padded_prompts([3, 5], seed=1)
    if "prompt_lookup_num_tokens" in extra:
        ids, mask = ids[1:], None
    reference, ours = run_both(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=PAD,
                               **extra)
    assert isinstance(reference, torch.Tensor), reference
    assert torch.equal(reference, ours)


def test_exponential_decay_with_eos_minus_one_raises_like_the_reference():
    model = tiny_model("llama")
    ids, _ = padded_prompts([4])
    reference, ours = run_both(model, ids, max_new_tokens=3, eos_token_id=-1,
                               exponential_decay_length_penalty=(1, 1.5))
    assert reference is ValueError and ours is ValueError


def test_prompt_given_twice_is_a_value_error():
    model = tiny_model("llama")
    ids, _ = padded_prompts([4])
    reference, ours = run_both(model, ids, input_ids=ids, max_new_tokens=2)
    assert reference is ValueError and ours is ValueError
    with pytest.raises(ValueError, match="given twice"):
        decoding.generate(model, ids, input_ids=ids, max_new_tokens=2)
    assert torch.equal(decoding.generate(model, input_ids=ids, max_new_tokens=2),
                       model.generate(input_ids=ids, max_new_tokens=2))
    assert torch.equal(decoding.generate(model, inputs=ids, max_new_tokens=2),
                       model.generate(inputs=ids, max_new_tokens=2))


def generation_config_fields():
    """Every field of the reference's GenerationConfig, found by introspection."""
    import transformers
    return sorted(set(transformers.GenerationConfig().to_dict()) - {"_from_model_config", "transformers_version"})


def on_value(name):
    import transformers

    from tests.test_knobs import ON
    return {"compile_config": transformers.CompileConfig(), "cache_config": {"max_batch_size": 2}, "disable_compile": True,
            "continuous_batching_config": {"block_size": 8}}.get(name, ON.get(name, "on"))


def test_every_generation_config_field_is_implemented_or_refused():
    from decoding.knobs import KNOBS, REFUSED
    missing = [name for name in generation_config_fields() if name not in KNOBS and name not in REFUSED]
    assert not missing, missing


@pytest.mark.parametrize("name", [n for n in generation_config_fields() if n in decoding.knobs.REFUSED])
@pytest.mark.parametrize("source", ["keyword", "generation_config", "model.generation_config"])
def test_unimplemented_field_refused_by_name_from_every_source(name, source):
    import copy

    import transformers
    model, refused = tiny_model("llama"), decoding.knobs.REFUSED[name]
    ids, _ = padded_prompts([4])
    value = on_value(name)
    kwargs = dict(max_new_tokens=3)
    if source == "keyword":
        kwargs[name] = value
    elif source == "generation_config":
        config = transformers.GenerationConfig()
        setattr(config, name, value)
        kwargs["generation_config"] = config
    else:
        model = copy.deepcopy(model)
        setattr(model.generation_config, name, value)
    if refused.off and set(refused.off) >= {True, False}:     # disable_compile: no value changes anything here
        assert torch.equal(decoding.generate(model, ids, **kwargs), tiny_model("llama").generate(ids, max_new_tokens=3))
    elif source == "model.generation_config" and not refused.changes_tokens:
        # a checkpoint's cache or compile setting: the tokens are the same, so it is accepted without effect
        assert torch.equal(decoding.generate(model, ids, **kwargs), tiny_model("llama").generate(ids, max_new_tokens=3))
    else:
        with pytest.raises(NotImplementedError, match=rf"`{name}="):
            decoding.generate(model, ids, **kwargs)


# ------------------------------------------------------------------------------------------------
# Model inputs passed through
# ------------------------------------------------------------------------------------------------

def token_types(mask, seed):
    """``[batch, len]`` 0/1 token type ids (0 on padding), different from all zeros."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, mask.shape, generator=g) * mask


PASSING_MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, top_k=30, num_return_sequences=2),
    "beams": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=2, do_sample=True),
    "no_cache": dict(use_cache=False),
}


@settings(deadline=None)
@given(lengths=lengths, seed=st.integers(0, 50), name=st.sampled_from(sorted(PASSING_MODES)))
def test_token_type_ids_grown_as_the_reference_grows_them(lengths, seed, name):
    model = tiny_model("gpt2")
    ids, mask = padded_prompts(lengths, seed)
    types = token_types(mask, seed)
    reference, ours = both(model, ids, seed, attention_mask=mask, token_type_ids=types, max_new_tokens=5,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, output_logits=True,
                           **PASSING_MODES[name])
    assert_same(reference, ours)


def test_token_type_ids_change_the_tokens():
    """The check above can fail: generating without the token types gives other logits."""
    model = tiny_model("gpt2")
    ids, mask = padded_prompts([5, 3], 1)
    with_types = decoding.generate(model, ids, attention_mask=mask, token_type_ids=token_types(mask, 1) + mask,
                                   max_new_tokens=4, return_dict_in_generate=True, output_logits=True)
    without = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True,
                                output_logits=True)
    assert not torch.allclose(with_types.logits[0], without.logits[0])


@pytest.mark.parametrize("name", ["greedy", "sample", "beams"])
def test_tokenizer_output_passed_whole(name):
    """``generate(model, **tokenizer(texts, return_tensors="pt"))`` with token_type_ids, as with model.generate."""
    import copy

    from tests.tokenizer import byte_tokenizer
    tokenizer = copy.deepcopy(byte_tokenizer())
    tokenizer.padding_side = "left"
    batch = tokenizer(["the cat sat", "a"], ["on it", "then"], return_tensors="pt", padding=True,
                      return_token_type_ids=True)
    assert "token_type_ids" in batch
    model = tiny_model("gpt2")
    torch.manual_seed(3)
    reference = model.generate(**batch, max_new_tokens=4, **PASSING_MODES[name])
    torch.manual_seed(3)
    ours = decoding.generate(model, **batch, max_new_tokens=4, **PASSING_MODES[name])
    assert torch.equal(reference, ours)


def test_token_type_ids_with_prompt_lookup():
    model = tiny_model("gpt2")
    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]])
    types = torch.tensor([[0, 0, 1, 1, 0, 1, 1, 1]])
    reference, ours = both(model, ids, 0, token_type_ids=types, max_new_tokens=8, prompt_lookup_num_tokens=3)
    assert torch.equal(reference, ours)


@settings(deadline=None)
@given(lengths=lengths, seed=st.integers(0, 50), name=st.sampled_from(sorted(PASSING_MODES)),
       arch=st.sampled_from(["llama", "gpt2", "opt", "gpt_neox"]), shift=st.integers(0, 7))
def test_position_ids_given_by_the_caller(lengths, seed, name, arch, shift):
    model = tiny_model(arch)
    ids, mask = padded_prompts(lengths, seed)
    positions = ((mask.cumsum(-1) - 1).clamp(min=0) + shift) * mask
    reference, ours = both(model, ids, seed, attention_mask=mask, position_ids=positions, max_new_tokens=4,
                           pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, output_logits=True,
                           **PASSING_MODES[name])
    assert_same(reference, ours)


@pytest.mark.parametrize("keep", [0, 1, 3])
@pytest.mark.parametrize("name", ["greedy", "beams"])
def test_logits_to_keep(keep, name):
    model = tiny_model("qwen2")
    ids, mask = padded_prompts([4, 6], 2)
    reference, ours = both(model, ids, 0, attention_mask=mask, logits_to_keep=keep, max_new_tokens=4,
                           return_dict_in_generate=True, output_logits=True, output_scores=True,
                           **PASSING_MODES[name])
    assert_same(reference, ours)


def recorded_forwards(model, run):
    """The keyword names and token_type_ids / extra values each forward of ``run()`` received."""
    import copy
    model = copy.deepcopy(model)
    calls = []
    forward = model.forward

    def recording(*args, **kwargs):
        calls.append({name: (tuple(v.shape), v.tolist()) if isinstance(v, torch.Tensor) else v
                      for name, v in kwargs.items() if name in ("token_type_ids", "output_router_logits", "labels",
                                                               "logits_to_keep")})
        return forward(*args, **kwargs)
    import functools
    model.forward = functools.wraps(forward)(recording)    # keeps forward's signature for both generates
    run(model)
    return calls


def test_forward_gets_what_the_reference_sends():
    base = tiny_model("gpt2")
    ids, mask = padded_prompts([3, 5], 4)
    kwargs = dict(attention_mask=mask, token_type_ids=token_types(mask, 4), output_router_logits=False,
                  labels=ids, max_new_tokens=3)
    reference = recorded_forwards(base, lambda m: m.generate(ids, **kwargs))
    ours = recorded_forwards(base, lambda m: decoding.generate(m, ids, **kwargs))
    assert ours == reference and "labels" not in reference[0] and reference[0]["output_router_logits"] is False


@pytest.mark.parametrize("arch,name", [("llama", "token_type_ids"), ("gpt2", "cache_position"),
                                       ("llama", "not_a_model_input"), ("opt", "encoder_hidden_states")])
def test_what_neither_generation_nor_the_model_knows_is_refused(arch, name):
    model = tiny_model(arch)
    ids, _ = padded_prompts([4])
    reference, ours = run_both(model, ids, max_new_tokens=2, **{name: torch.zeros_like(ids)})
    assert reference is ValueError and issubclass(ours, ValueError)
    with pytest.raises(ValueError, match=name):
        decoding.generate(model, ids, max_new_tokens=2, **{name: torch.zeros_like(ids)})


def test_model_input_shapes_checked():
    model = tiny_model("gpt2")
    ids, _ = padded_prompts([4, 4])
    with pytest.raises(ValueError, match="token_type_ids"):
        decoding.generate(model, ids, token_type_ids=torch.zeros(2, 3, dtype=torch.long), max_new_tokens=2)


# ------------------------------------------------------------------------------------------------
# inputs_embeds
# ------------------------------------------------------------------------------------------------

EMBEDS_MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, top_k=30, num_return_sequences=2),
    "beams": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=2, do_sample=True),
}
LENGTHS = {
    "max_new_tokens": dict(max_new_tokens=5),
    "max_length": dict(max_length=9),
    "min_new_tokens": dict(max_new_tokens=5, min_new_tokens=3),
    "min_length": dict(max_new_tokens=5, min_length=7),
}


@settings(deadline=None)
@given(lengths=lengths, seed=st.integers(0, 50), name=st.sampled_from(sorted(EMBEDS_MODES)),
       arch=st.sampled_from(["llama", "gpt2", "qwen2", "opt"]), with_ids=st.booleans(),
       length=st.sampled_from(sorted(LENGTHS)), noise=st.floats(0, 0.5))
def test_inputs_embeds_against_the_reference(lengths, seed, name, arch, with_ids, length, noise):
    model = tiny_model(arch)
    ids, mask = padded_prompts(lengths, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    embeds = embeds + noise * torch.randn(embeds.shape, generator=g)
    prompt = dict(input_ids=ids) if with_ids else {}
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, pad_token_id=PAD, eos_token_id=[2, 3, 4, 5],
                  return_dict_in_generate=True, output_scores=True, output_logits=True, **prompt,
                  **LENGTHS[length], **EMBEDS_MODES[name])
    torch.manual_seed(seed)
    reference = model.generate(**kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, **kwargs)
    assert ours.sequences.shape[1] == reference.sequences.shape[1]
    assert_same(reference, ours)


def test_inputs_embeds_are_what_the_prefill_sees():
    """The check above can fail: other embeddings than the ids' give other tokens."""
    model = tiny_model("llama")
    ids, mask = padded_prompts([5, 4], 3)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=4, output_logits=True,
                              return_dict_in_generate=True)
    same = decoding.generate(model, inputs_embeds=embeds, input_ids=ids, attention_mask=mask, max_new_tokens=4,
                             output_logits=True, return_dict_in_generate=True)
    shifted = decoding.generate(model, inputs_embeds=embeds.flip(-1), input_ids=ids, attention_mask=mask,
                                max_new_tokens=4, output_logits=True, return_dict_in_generate=True)
    torch.testing.assert_close(same.logits[0], plain.logits[0])
    assert not torch.allclose(shifted.logits[0], plain.logits[0])


@pytest.mark.parametrize("knob", [dict(repetition_penalty=1.3), dict(no_repeat_ngram_size=2)])
def test_inputs_embeds_without_ids_warn_as_the_reference_warns(knob):
    model = tiny_model("llama")
    ids, _ = padded_prompts([4])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    with pytest.warns(UserWarning) as reference_warnings:
        reference = model.generate(inputs_embeds=embeds, max_new_tokens=6, **knob)
    with pytest.warns(UserWarning, match=next(iter(knob))) as our_warnings:
        ours = decoding.generate(model, inputs_embeds=embeds, max_new_tokens=6, **knob)
    assert any(next(iter(knob)) in str(w.message) for w in reference_warnings)
    assert len(our_warnings) >= 1 and torch.equal(reference, ours)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoding.generate(model, ids, inputs_embeds=embeds, max_new_tokens=2, **knob)


def test_inputs_embeds_refusals():
    model = tiny_model("llama")
    ids, mask = padded_prompts([4, 4])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    with pytest.raises(ValueError, match="float tensor"):
        decoding.generate(model, inputs_embeds=ids, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask"):
        decoding.generate(model, inputs_embeds=embeds, attention_mask=mask[:, :2], max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        decoding.generate(model, inputs_embeds=embeds[:1], max_new_tokens=2, prompt_lookup_num_tokens=2)


# ------------------------------------------------------------------------------------------------
# custom_generate: a local folder, and Hub names refused
# ------------------------------------------------------------------------------------------------

FOLDER_GENERATE = '''
import torch

RECEIVED = []


def generate(model, inputs=None, attention_mask=None, max_new_tokens=3, **kwargs):
    """A plain greedy loop without a cache (what a custom_generate folder may hold)."""
    RECEIVED.append(sorted(kwargs))
    ids = inputs
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=-1)
    return ids
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "custom_generate").mkdir()
    (tmp_path / "custom_generate" / "generate.py").write_text(FOLDER_GENERATE)
    return tmp_path


def test_custom_generate_folder_runs_as_the_reference_runs_it(folder):
    import sys
    model = tiny_model("llama")
    ids, _ = padded_prompts([5])
    reference = model.generate(ids, custom_generate=str(folder), trust_remote_code=True, max_new_tokens=4)
    ours = decoding.generate(model, ids, custom_generate=str(folder), trust_remote_code=True, max_new_tokens=4)
    assert torch.equal(reference, ours) and ours.shape == (1, 9)
    modules = [m for name, m in sys.modules.items() if name.startswith("decoding_custom_generate_")]
    received = [m.RECEIVED for m in modules if getattr(m, "RECEIVED", None)]
    assert received and "generation_config" in received[-1][-1] and "streamer" in received[-1][-1]
    plain = decoding.generate(model, ids, max_new_tokens=4, use_cache=False)
    assert torch.equal(plain, ours)


def test_custom_generate_folder_needs_trust_remote_code(folder):
    model = tiny_model("llama")
    ids, _ = padded_prompts([5])
    reference, ours = run_both(model, ids, custom_generate=str(folder), max_new_tokens=2)
    assert reference is ValueError and ours is ValueError
    with pytest.raises(OSError, match="custom_generate/generate.py"):
        decoding.generate(model, ids, custom_generate=str(folder / "custom_generate"), trust_remote_code=True)
    (folder / "custom_generate" / "requirements.txt").write_text("surely-not-an-installed-package>=1\n")
    with pytest.raises(ImportError, match="surely-not-an-installed-package"):
        decoding.generate(model, ids, custom_generate=str(folder), trust_remote_code=True, max_new_tokens=2)


@pytest.mark.parametrize("repo,hint", [("transformers-community/contrastive-search", "penalty_alpha"),
                                       ("transformers-community/dola", "dola_layers"),
                                       ("transformers-community/group-beam-search", "num_beam_groups"),
                                       ("transformers-community/constrained-beam-search", "force_words_ids"),
                                       ("someone/their-sampler", "strategy")])
def test_custom_generate_hub_name_refused_with_what_to_use(repo, hint):
    model = tiny_model("llama")
    ids, _ = padded_prompts([5])
    with pytest.raises(NotImplementedError, match=rf"(?s)Hub repository.*remote code.*{hint}"):
        decoding.generate(model, ids, custom_generate=repo, trust_remote_code=True, max_new_tokens=2)


# ------------------------------------------------------------------------------------------------
# synced_gpus: two gloo processes
# ------------------------------------------------------------------------------------------------

def _synced_worker(rank, world, store_path, out_dir):
    """One rank: prompts and lengths of its own; the reference and ours with synced_gpus=True, forwards counted."""
    import json
    import os

    import torch.distributed as dist
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    try:
        import copy
        model = copy.deepcopy(tiny_model("llama"))
        forwards = []
        forward = model.forward

        def counting(*args, **kwargs):
            forwards.append(1)
            return forward(*args, **kwargs)
        import functools
        model.forward = functools.wraps(forward)(counting)
        ids, mask = padded_prompts([3, 6] if rank == 0 else [5], seed=rank)
        new = 2 if rank == 0 else 6
        result = {}
        for name, kwargs in (("greedy", {}), ("sample", dict(do_sample=True, top_k=20))):
            torch.manual_seed(rank)
            reference = model.generate(ids, attention_mask=mask, max_new_tokens=new, synced_gpus=True, **kwargs)
            forwards.clear()
            torch.manual_seed(rank)
            ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=new, synced_gpus=True, **kwargs)
            ours_forwards = len(forwards)
            torch.manual_seed(rank)
            alone = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=new, **kwargs)
            result[name] = dict(reference=reference.tolist(), ours=ours.tolist(), alone=alone.tolist(),
                                forwards=ours_forwards)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_synced_gpus_every_rank_steps_until_all_are_done(tmp_path):
    import json

    import torch.multiprocessing as mp
    mp.spawn(_synced_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for name in ("greedy", "sample"):
        for rank in ranks:
            assert rank[name]["ours"] == rank[name]["reference"] == rank[name]["alone"]
        # rank 0 is done after 2 tokens but keeps stepping with rank 1 (6 tokens): one prefill + 5 steps each
        assert ranks[0][name]["forwards"] == ranks[1][name]["forwards"] == 6
    assert len(ranks[0]["greedy"]["ours"][0]) == 6 + 2 and len(ranks[1]["greedy"]["ours"][0]) == 5 + 6


def test_synced_gpus_refused_where_not_kept_in_step():
    model = tiny_model("llama")
    ids, _ = padded_prompts([4])
    with pytest.raises(NotImplementedError, match="synced_gpus"):
        decoding.generate(model, ids, max_new_tokens=2, num_beams=2, synced_gpus=True)
    assert torch.equal(decoding.generate(model, ids, max_new_tokens=2, synced_gpus=False),
                       model.generate(ids, max_new_tokens=2, synced_gpus=False))
    with pytest.raises(ValueError, match="init_process_group"):     # no process group: said before any forward
        decoding.generate(model, ids, max_new_tokens=2, synced_gpus=True)


@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("name", ["greedy", "sample", "beams"])
def test_inputs_embeds_with_the_static_cache(with_ids, name):
    model = tiny_model("llama")
    ids, mask = padded_prompts([3, 5], 5)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids) + 0.05
    prompt = dict(input_ids=ids) if with_ids else {}
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=5, cache_implementation="static",
                  **prompt, **EMBEDS_MODES[name])
    torch.manual_seed(1)
    reference = model.generate(**kwargs)
    torch.manual_seed(1)
    assert torch.equal(decoding.generate(model, **kwargs), reference)


@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("name", ["greedy", "sample"])
def test_inputs_embeds_continuing_a_cache(with_ids, name):
    """The whole sequence's embeddings with the cache of its first part: only the rest is fed, as the reference does."""
    import copy
    model = tiny_model("llama")
    ids, mask = padded_prompts([3, 5], 6)
    first = model.generate(ids, attention_mask=mask, max_new_tokens=3, return_dict_in_generate=True)
    sequence = first.sequences
    full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], dim=-1)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(sequence)
    prompt = dict(input_ids=sequence) if with_ids else {}
    runs = []
    for run in (model.generate, lambda **kw: decoding.generate(model, **kw)):
        torch.manual_seed(2)
        runs.append(run(inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=4,
                        past_key_values=copy.deepcopy(first.past_key_values), **prompt,
                        **(dict(do_sample=True, top_k=30) if name == "sample" else {})))
    assert torch.equal(runs[0], runs[1])
