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
