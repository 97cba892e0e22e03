"""decoding.compare reports identity, or the first divergence."""

import torch

import decoding
from tests.models import PAD, prompts, tiny_model


def test_identical_runs():
    model = tiny_model("llama")
    ids, mask = prompts(3, 0)
    result = decoding.compare(model, ids, rng_seed=3, attention_mask=mask, max_new_tokens=8, do_sample=True,
                              pad_token_id=PAD)
    assert result.identical and result.first_difference is None
    assert result.max_score_difference <= 1e-5
    assert result.summary().startswith("identical: 3 row(s) x 8 new tokens")


class BanAfterCalls:
    """Bans one token, but only from its `start`-th call on: the second run (ours) sees it earlier."""

    def __init__(self, token, start):
        self.token, self.start, self.calls = token, start, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls > self.start:
            scores = scores.clone()
            scores[:, self.token] = -float("inf")
        return scores


def test_first_divergence_is_located():
    model = tiny_model("llama")
    ids, mask = prompts(2, 1)
    plain = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    # ban the token that row 1 takes at step 4, from the 14th call on: the reference makes 10 calls,
    # so only our run (calls 11-20) bans it, starting at its 4th step
    token = int(plain[1, ids.shape[1] + 3])
    result = decoding.compare(model, ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None,
                              logits_processor=[BanAfterCalls(token, start=13)])
    assert not result.identical
    row, step = result.first_difference
    assert step == 3 and int(result.ours.sequences[row, ids.shape[1] + 3]) != token
    assert "new token 3" in result.summary()
