"""DoLa against transformers 4.55.4's ``model.generate(dola_layers=...)``, token for token.

4.55.4 averages the Jensen-Shannon divergences over the batch and contrasts every row with the same
premature layer; the paper picks the layer per row, as ``decoding`` does (docs/dola.md). One row:
the reference runs as it is. Several rows: its ``_dola_select_contrast`` is replaced by
:func:`select_per_row`, so the rest (the forward passes, the plausibility constraint, processors,
stopping, sampling, outputs) is still the reference's own loop.
"""

import copy
from contextlib import nullcontext
from unittest import mock

import pytest
import torch
import transformers
import transformers.generation.utils as reference_utils
from hypothesis import event, given, settings
from hypothesis import strategies as st

import decoding
from decoding.strategies.dola import premature_layers
from tests.models import ARCHITECTURES, EOS, PAD, prompts, tiny_model
from tests.reference import assert_same, assert_same_steps, emitted

ARCHS = sorted(ARCHITECTURES)
#: Hypothesis examples per architecture: a third of the profile's (8 at DECODING_EXAMPLES=25).
PER_ARCH = max(2, settings.default.max_examples // 3)
BATCH_WIDE = reference_utils._dola_select_contrast
LAYERS = ["low", "high", [0], [1], [0, 1], [1, 0]]


def select_per_row(candidate_layers, candidate_logits, final_logits):
    """The reference's ``_dola_select_contrast``, with the premature layer chosen for each row."""
    rows = []
    for row in range(final_logits.shape[0]):
        one = {layer: logits[row:row + 1] for layer, logits in candidate_logits.items()}
        rows.append(BATCH_WIDE(candidate_layers, one, final_logits[row:row + 1]))
    return torch.cat(rows, dim=0)


def reference(model, ids, mask, seed, **kwargs):
    """4.55.4's run (several rows: through :func:`select_per_row`)."""
    patch = (mock.patch.object(reference_utils, "_dola_select_contrast", select_per_row) if ids.shape[0] > 1
             else nullcontext())
    with patch:
        torch.manual_seed(seed)
        return model.generate(ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=PER_ARCH)
@given(batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       layers=st.sampled_from(LAYERS), repetition_penalty=st.sampled_from([1.0, 1.2, 1.5]),
       do_sample=st.booleans(), temperature=st.sampled_from([0.7, 1.0]), steps=st.integers(1, 10),
       eos_pick=st.integers(0, 9))
def test_matches_reference(arch, batch, seed, layers, repetition_penalty, do_sample, temperature, steps, eos_pick):
    event(f"rows={batch}")
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    kwargs = dict(dola_layers=layers, repetition_penalty=repetition_penalty, do_sample=do_sample,
                  max_new_tokens=steps, pad_token_id=PAD)
    if do_sample:
        kwargs.update(temperature=temperature, top_k=0)
    tokens = emitted(model, ids, mask, seed, steps, PAD, dola_layers=layers)[0].tolist()
    kwargs["eos_token_id"] = tokens[eos_pick % len(tokens)]
    outputs = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
    expected = reference(model, ids, mask, seed, **kwargs, **outputs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, attention_mask=mask, **kwargs, **outputs)
    assert_same(expected, ours)


def deep_tied_model(layers: int):
    """A tiny Llama with ``layers`` layers and tied embeddings: the cases where "low" skips the embeddings."""
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(layers)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("layers", [1, 2, 5, 8])
def test_low_and_high_on_deeper_and_tied_models(layers):
    model = deep_tied_model(layers)
    ids, mask = prompts(1, layers)
    for dola_layers in ("low", "high", list(range(layers))):
        kwargs = dict(attention_mask=mask, max_new_tokens=6, dola_layers=dola_layers, repetition_penalty=1.2,
                      return_dict_in_generate=True, output_scores=True, output_logits=True)
        assert_same(model.generate(ids, **kwargs), decoding.generate(model, ids, **kwargs))


def test_the_reference_picks_one_layer_for_the_batch_and_ours_one_per_row():
    """The documented difference: a padded batch where the rows' most divergent layers differ."""
    model = tiny_model("gemma2")
    ids, mask = prompts(3, 2)
    kwargs = dict(max_new_tokens=10, dola_layers=[0, 1])
    batch_wide = model.generate(ids, attention_mask=mask, **kwargs)
    ours = decoding.generate(model, ids, attention_mask=mask, **kwargs)
    assert torch.equal(ours, reference(model, ids, mask, 0, **kwargs))
    assert not torch.equal(ours, batch_wide)


def test_hidden_states_and_streaming_as_the_reference():
    model = copy.deepcopy(tiny_model("llama"))
    model.config._attn_implementation = "eager"          # sdpa returns no attentions
    ids, mask = prompts(1, 3)

    class Recorder:
        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.puts.append("end")

    kwargs = dict(attention_mask=mask, max_new_tokens=5, dola_layers="low", eos_token_id=None,
                  return_dict_in_generate=True, output_hidden_states=True, output_attentions=True)
    theirs, mine = Recorder(), Recorder()
    expected = model.generate(ids, streamer=theirs, **kwargs)
    ours = decoding.generate(model, ids, streamer=mine, **kwargs)
    assert theirs.puts == mine.puts
    assert torch.equal(expected.sequences, ours.sequences)
    for name in ("hidden_states", "attentions"):
        for layers_expected, layers_ours in zip(getattr(expected, name), getattr(ours, name), strict=True):
            assert_same_steps(list(layers_expected), list(layers_ours))


def test_premature_layers_as_the_reference_reads_them():
    assert premature_layers(deep_tied_model(8), "low") == [2]
    assert premature_layers(deep_tied_model(8), "high") == [4, 6]
    assert premature_layers(tiny_model("llama"), "low") == [0]
    with pytest.raises(ValueError, match=r"dola_layers=\[0, 2\].*layer\(s\) \[2\].*2-layer"):
        decoding.generate(tiny_model("llama"), torch.tensor([[5, 6]]), max_new_tokens=2, dola_layers=[0, 2])


def test_eos_in_the_batch_pads_finished_rows():
    model = tiny_model("opt")
    ids, mask = prompts(1, 4)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, dola_layers="high", pad_token_id=PAD)
    first = decoding.generate(model, ids, **kwargs)[0, ids.shape[1] + 1].item()
    out = decoding.generate(model, ids, eos_token_id=[first, EOS], **kwargs)
    assert torch.equal(out, model.generate(ids, eos_token_id=[first, EOS], **kwargs))


def test_several_sequences_per_prompt_where_the_reference_returns_one():
    """The documented difference: 4.55.4's DoLa does not expand the prompts for num_return_sequences."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 6)
    kwargs = dict(attention_mask=mask, max_new_tokens=4, dola_layers="high", do_sample=True, num_return_sequences=3)
    torch.manual_seed(0)
    assert model.generate(ids, **kwargs).shape[0] == 2
    torch.manual_seed(0)
    assert decoding.generate(model, ids, **kwargs).shape[0] == 6
