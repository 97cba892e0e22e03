"""The per-row seeded draw: keyed by (seed, step) only, and distributed as Categorical(p)."""

import torch

from decoding.seeding import mix, seeded_multinomial


def test_a_row_does_not_depend_on_the_other_rows():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 50, generator=g), -1)
    batch = seeded_multinomial(probs, [11, 12, 13, 14], [3, 3, 3, 3])
    for row in range(4):
        alone = seeded_multinomial(probs[row:row + 1], [11 + row], [3])
        assert int(alone) == int(batch[row])


def test_keys_differ_by_seed_step_and_stream():
    keys = {mix(s, t, k) for s in range(20) for t in range(20) for k in range(2)}
    assert len(keys) == 800 and all(0 <= k < 2**63 for k in keys)


def test_never_draws_a_zero_probability_token():
    probs = torch.zeros(1, 30)
    probs[0, [3, 17]] = torch.tensor([0.25, 0.75])
    drawn = {int(seeded_multinomial(probs, [0], [step])) for step in range(200)}
    assert drawn == {3, 17}


def test_frequencies_follow_the_distribution():
    """Chi-square over 4000 keyed draws from a fixed distribution (df = 4, p = 0.001 bound 18.47)."""
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    n = 4000
    draws = torch.stack([seeded_multinomial(p[None], [7], [step]) for step in range(n)]).reshape(-1)
    counts = torch.bincount(draws, minlength=5).float()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 18.47, (counts, chi2)
