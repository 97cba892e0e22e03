"""ModelRunner's row operations (select, repeat, fork, crop) against the obvious slow implementation.

The slow implementation keeps each row's whole history (ids and mask) and prefills it in a fresh
runner. After any sequence of row operations, the next step's logits must equal the logits of a
fresh runner prefilling the corresponding full sequences (within float tolerance: one is
incremental, the other one forward over everything).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from decoding.runner import ModelRunner
from tests.models import ARCHITECTURES, VOCAB, prompts, tiny_model

TOLERANCE = dict(atol=2e-4, rtol=2e-4)


class Shadow:
    """The slow twin of a runner: every row's full ids ``[rows, length]`` and mask, nothing cached."""

    def __init__(self, ids: torch.LongTensor, mask: torch.LongTensor):
        self.ids, self.mask = ids, mask

    def step(self, tokens: torch.LongTensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)[:, None]], dim=1)

    def select(self, rows: torch.LongTensor) -> None:
        self.ids, self.mask = self.ids[rows], self.mask[rows]

    def repeat(self, k: int) -> None:
        self.ids, self.mask = self.ids.repeat_interleave(k, dim=0), self.mask.repeat_interleave(k, dim=0)

    def crop(self, n: int) -> None:
        self.ids, self.mask = self.ids[:, :self.ids.shape[1] - n], self.mask[:, :self.mask.shape[1] - n]

    def fork(self) -> "Shadow":
        return Shadow(self.ids.clone(), self.mask.clone())

    def most_croppable(self) -> int:
        """The longest crop that leaves every row at least one real token (a row of pads alone is
        positioned differently by a prefill and by steps, in the reference too)."""
        leading_pads = (self.mask.cumsum(dim=1) == 0).sum(dim=1)
        return self.ids.shape[1] - 1 - int(leading_pads.max())

    def next_logits(self, model, tokens: torch.LongTensor) -> torch.FloatTensor:
        """What a fresh runner prefilling the history plus ``tokens`` returns."""
        ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        mask = torch.cat([self.mask, torch.ones_like(tokens)[:, None]], dim=1)
        with torch.no_grad():
            return ModelRunner(model, mask, ids.shape[1] + 1).prefill(ids)


def random_tokens(rows: int, generator: torch.Generator) -> torch.LongTensor:
    return torch.randint(3, VOCAB, (rows,), generator=generator)


def check_next_step(model, runner: ModelRunner, shadow: Shadow, generator: torch.Generator) -> None:
    """Step both with the same random tokens; the runner's logits must match a fresh prefill's."""
    tokens = random_tokens(runner.rows, generator)
    expected = shadow.next_logits(model, tokens)
    with torch.no_grad():
        got = runner.step(tokens)
    shadow.step(tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **TOLERANCE)


def started(arch: str, batch: int, seed: int, steps: int, use_cache: bool = True, croppable: bool = False):
    """A tiny model, a runner and its shadow after the prefill and ``steps`` random steps."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    generator = torch.Generator().manual_seed(seed)
    runner = ModelRunner(model, mask, ids.shape[1] + 64, use_cache=use_cache, croppable=croppable)
    shadow = Shadow(ids, mask)
    with torch.no_grad():
        runner.prefill(ids)
    for _ in range(steps):
        check_next_step(model, runner, shadow, generator)
    return model, runner, shadow, generator


OPERATIONS = ["select", "repeat", "crop", "fork", "step"]


@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 4), seed=st.integers(0, 10_000),
       use_cache=st.booleans(), program=st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=4),
       data=st.data())
def test_row_operations_match_a_fresh_prefill(arch, batch, seed, use_cache, program, data):
    """Any sequence of row operations, then a step: the logits of a fresh prefill of the same histories."""
    model, runner, shadow, generator = started(arch, batch, seed, steps=2, use_cache=use_cache, croppable=True)
    for operation in program:
        if operation == "select":
            k = data.draw(st.integers(1, 6), label="selected rows")
            rows = torch.tensor(data.draw(st.lists(st.integers(0, runner.rows - 1), min_size=k, max_size=k),
                                          label="rows"), dtype=torch.long)
            runner.select(rows)
            shadow.select(rows)
        elif operation == "repeat":
            k = data.draw(st.integers(1, 3), label="repeats")
            if runner.rows * k > 12:
                k = 1
            runner.repeat(k)
            shadow.repeat(k)
        elif operation == "crop":
            n = data.draw(st.integers(0, shadow.most_croppable()), label="cropped")
            runner.crop(n)
            shadow.crop(n)
        elif operation == "fork":
            runner, shadow = runner.fork(), shadow.fork()
        assert runner.length == shadow.ids.shape[1]
        check_next_step(model, runner, shadow, generator)


@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       use_cache=st.booleans(), steps=st.integers(0, 3))
def test_fork_is_independent(arch, batch, seed, use_cache, steps):
    """Stepping, selecting and cropping a fork leaves the original's next logits unchanged (bit for bit)."""
    model, original, shadow, generator = started(arch, batch, seed, steps=steps, use_cache=use_cache,
                                                 croppable=True)
    fork, untouched = original.fork(), original.fork()
    if use_cache:
        for mine, theirs in zip(original.cache.layers, fork.cache.layers):
            assert mine.keys.data_ptr() != theirs.keys.data_ptr()
    with torch.no_grad():
        for _ in range(3):
            fork.step(random_tokens(fork.rows, generator))
        fork.repeat(2)
        fork.select(torch.tensor([1, 0]))
        fork.crop(2)
        fork.step(random_tokens(fork.rows, generator))
    tokens = random_tokens(original.rows, generator)
    with torch.no_grad():
        got, expected = original.step(tokens), untouched.step(tokens)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got, shadow.next_logits(model, tokens), **TOLERANCE)


@given(arch=st.sampled_from(sorted(ARCHITECTURES)), batch=st.integers(1, 3), seed=st.integers(0, 10_000),
       use_cache=st.booleans(), kept=st.integers(0, 4), dropped=st.integers(1, 6))
def test_crop_then_step_equals_never_having_fed_the_cropped_tokens(arch, batch, seed, use_cache, kept, dropped):
    """Feed ``kept`` tokens, then ``dropped`` more, crop those: the next step is the one of a runner
    that only ever fed the ``kept`` tokens."""
    model = tiny_model(arch)
    ids, mask = prompts(batch, seed)
    generator = torch.Generator().manual_seed(seed)
    fed = [random_tokens(batch, generator) for _ in range(kept + dropped)]
    last = random_tokens(batch, generator)
    runs = []
    for tokens in (fed, fed[:kept]):
        runner = ModelRunner(model, mask, ids.shape[1] + 32, use_cache=use_cache, croppable=True)
        with torch.no_grad():
            runner.prefill(ids)
            for token in tokens:
                runner.step(token)
            if len(tokens) > kept:
                runner.crop(dropped)
            runs.append((runner.length, runner.step(last)))
    (cropped_length, cropped), (plain_length, plain) = runs
    assert cropped_length == plain_length
    torch.testing.assert_close(cropped, plain, **TOLERANCE)


def test_crop_into_the_prompt():
    """Cropping may reach into the prompt: the rest continues as a shorter prompt would."""
    model, runner, shadow, generator = started("llama", 3, 5, steps=2)
    n = shadow.most_croppable()
    assert n > 2
    runner.crop(n)
    shadow.crop(n)
    check_next_step(model, runner, shadow, generator)
    check_next_step(model, runner, shadow, generator)


def test_repeat_serves_branches_from_one_prefill():
    """``repeat(k)`` orders rows r0, r0, .., r1, r1, ..: each copy continues its own row."""
    model, runner, shadow, generator = started("qwen2", 2, 3, steps=1)
    runner.repeat(3)
    shadow.repeat(3)
    assert runner.rows == 6
    check_next_step(model, runner, shadow, generator)


@pytest.mark.parametrize("arch", ["mistral", "gemma2"])
def test_crop_past_a_sliding_window(arch):
    """Sliding-window layers drop old keys: past the window, crop needs ``croppable=True``, and then
    works for the tokens fed since the previous crop."""
    model, runner, shadow, generator = started(arch, 2, 1, steps=12)
    with pytest.raises(ValueError, match="croppable=True"):
        runner.crop(2)
    model, runner, shadow, generator = started(arch, 2, 1, steps=12, croppable=True)
    for n in (5, 3):
        runner.crop(n)
        shadow.crop(n)
        for _ in range(4):
            check_next_step(model, runner, shadow, generator)
    with pytest.raises(ValueError, match="crop at most 4"):
        runner.crop(5)


def test_row_operations_refuse_bad_arguments():
    _, runner, _, _ = started("llama", 2, 0, steps=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="repeat"):
            runner.repeat(bad)
    for bad in (-1, runner.length, 2.0):
        with pytest.raises(ValueError, match="crop"):
            runner.crop(bad)
    fresh = ModelRunner(tiny_model("llama"), torch.ones(1, 3, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="after prefill"):
        fresh.crop(1)


def test_mask_buffer_grows_with_the_generation():
    """The mask buffer starts at the prompt's width, whatever max_length says, and doubles when full."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    prompt_length = ids.shape[1]
    runner = ModelRunner(model, mask, 10**8)
    widths = [runner._mask.shape[1]]
    with torch.no_grad():
        runner.prefill(ids)
        for _ in range(3 * prompt_length):
            runner.step(torch.full((2,), 5))
            widths.append(runner._mask.shape[1])
    assert sorted(set(widths)) == [prompt_length, 2 * prompt_length, 4 * prompt_length]
    assert torch.equal(runner.attention_mask, torch.cat([mask, torch.ones(2, 3 * prompt_length, dtype=torch.long)], 1))
    capped = ModelRunner(model, mask, prompt_length + 3)
    with torch.no_grad():
        capped.prefill(ids)
        capped.step(torch.full((2,), 5))
    assert capped._mask.shape[1] == prompt_length + 3          # doubling stops at max_length


class OwnReorder(torch.nn.Module):
    """A model with its own ``_reorder_cache`` (as some older transformers models have): the runner must use it."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, []

    def forward(self, **kwargs):
        return self.inner(**kwargs)

    def _reorder_cache(self, cache, rows):
        self.calls.append(rows.tolist())
        cache.reorder_cache(rows)
        return cache


def test_a_model_s_own_reorder_cache_is_used():
    model = OwnReorder(tiny_model("llama"))
    ids, mask = prompts(2, 7)
    runner, shadow = ModelRunner(model, mask, ids.shape[1] + 8), Shadow(ids, mask)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        runner.prefill(ids)
    runner.repeat(2)
    shadow.repeat(2)
    runner.select(torch.tensor([3, 0]))
    shadow.select(torch.tensor([3, 0]))
    assert model.calls == [[0, 0, 1, 1], [3, 0]]
    check_next_step(model, runner, shadow, generator)


def test_the_runner_records_no_autograd_graph_outside_generate():
    model = tiny_model("llama")
    ids, mask = prompts(2, 4)
    runner = ModelRunner(model, mask, ids.shape[1] + 2)
    logits = runner.prefill(ids)
    assert not logits.requires_grad
    assert not runner.step(logits.argmax(-1)).requires_grad


def test_the_last_output_is_not_held_through_a_forward_or_a_move_of_the_rows():
    """The reference deletes a step's model output before it reorders the cache and before the next
    forward: its logits (``[rows, vocab]``) are then not part of the peak. The runner lets go of
    ``last_output`` at the same points, and keeps it in between (for the strategies' records)."""
    model = tiny_model("llama")
    ids, mask = prompts(2, 0)
    runner = ModelRunner(model, mask, max_length=ids.shape[1] + 4)
    held_during_forward = []
    original = model.forward

    def forward(**kwargs):
        held_during_forward.append(runner.last_output)
        return original(**kwargs)

    model.forward = forward
    try:
        runner.prefill(ids)
        assert runner.last_output is not None
        runner.step(torch.tensor([5, 6]))
        assert runner.last_output is not None
        runner.reorder(torch.tensor([1, 0]))
        assert runner.last_output is None
        runner.step(torch.tensor([5, 6]))
        runner.select(torch.tensor([0, 0, 1]))
        assert runner.last_output is None
        runner.step(torch.tensor([5, 6, 7]))
    finally:
        del model.forward
    assert held_during_forward == [None] * 4
