"""Running the reference beside ours, and comparing what they return (shared by the test files)."""

import torch

import decoding


def both(model, ids, seed, **kwargs):
    """``model.generate`` and ``decoding.generate`` with the same arguments, each after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    reference = model.generate(ids, **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, **kwargs)
    return reference, ours


def assert_same_steps(reference_steps, our_steps):
    """Per-step ``[rows, vocab]`` tensors: as many steps, ``±inf`` in the same places, the rest within 1e-5."""
    assert len(reference_steps) == len(our_steps)
    for r, o in zip(reference_steps, our_steps):
        assert torch.equal(r == torch.inf, o == torch.inf) and torch.equal(r == -torch.inf, o == -torch.inf)
        finite = torch.isfinite(r)
        torch.testing.assert_close(o[finite], r[finite], atol=1e-5, rtol=0)


def assert_same(reference, ours, scores=True):
    """Identical sequences; with ``scores``, processed scores and raw logits equal as :func:`assert_same_steps`."""
    assert torch.equal(reference.sequences, ours.sequences), (reference.sequences, ours.sequences)
    if scores:
        assert_same_steps(reference.scores, ours.scores)
        assert_same_steps(reference.logits, ours.logits)


def emitted(model, ids, mask, seed, steps, pad_token_id, **kwargs):
    """``[rows, steps]``: the tokens a plain reference run emits (candidates for eos, bans and biases that bite)."""
    torch.manual_seed(seed)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None,
                         pad_token_id=pad_token_id, **kwargs)
    return out[:, ids.shape[1]:]
