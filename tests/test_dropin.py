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
