"""Presence and frequency penalties over the generated tokens (the OpenAI API's and vLLM's definitions).

Both subtract from the scores of tokens the row has already *generated*; prompt tokens do not count
(unlike ``repetition_penalty``, which looks at the prompt too). With ``c[v]`` the number of times
token ``v`` occurs among the row's generated tokens:

    scores[v] -= frequency_penalty * c[v] + presence_penalty * [c[v] > 0]

Sources: the OpenAI API reference ("Parameter details" of the chat completions API, ``presence_penalty``
and ``frequency_penalty`` in [-2, 2]); vLLM's ``SamplingParams`` (same names, same formula, output
tokens only).
"""

from __future__ import annotations

import torch

from ..declarations import BEYOND, PENALTY, Knob, Sampler
from .base import LogitsProcessor


def generated_counts(input_ids: torch.LongTensor, prompt_length: int, vocab: int,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``c[r, v]``: how often token ``v`` occurs in row ``r`` after the (padded) prompt; ``[rows, vocab]``."""
    generated = input_ids[:, prompt_length:]
    counts = torch.zeros(input_ids.shape[0], vocab, dtype=dtype, device=input_ids.device)
    return counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=dtype))


def check_penalty(name: str, value) -> float:
    """``presence_penalty`` / ``frequency_penalty``: a number in [-2, 2]; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -2.0 <= value <= 2.0:
        raise ValueError(f"`{name}` must be a number in [-2, 2] (the OpenAI range; 0 disables it), "
                         f"but is {value!r}.")
    return float(value)


class PresencePenaltyLogitsProcessor(LogitsProcessor):
    """Presence penalty (OpenAI API, vLLM): ``scores[v] -= presence_penalty * [c[v] > 0]``.

    ``c[v]`` counts token ``v`` among the row's generated tokens (``input_ids[:, prompt_length:]``).
    A positive value pushes the model towards new tokens, a negative one towards repeats.

    Args:
        presence_penalty: a number in [-2, 2].
        prompt_length: the padded prompt length; positions before it are not counted.
    """

    name = "presence_penalty"
    position_dependent = True      # counts from where the prompt ends

    def __init__(self, presence_penalty: float, prompt_length: int):
        self.presence_penalty = check_penalty("presence_penalty", presence_penalty)
        self.prompt_length = int(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        present = generated_counts(input_ids, self.prompt_length, scores.shape[-1], scores.dtype) > 0
        return scores - self.presence_penalty * present.to(scores.dtype)


class FrequencyPenaltyLogitsProcessor(LogitsProcessor):
    """Frequency penalty (OpenAI API, vLLM): ``scores[v] -= frequency_penalty * c[v]``.

    ``c[v]`` counts token ``v`` among the row's generated tokens (``input_ids[:, prompt_length:]``),
    so a token generated three times is pushed down three times as hard as one generated once.

    Args:
        frequency_penalty: a number in [-2, 2].
        prompt_length: the padded prompt length; positions before it are not counted.
    """

    name = "frequency_penalty"
    position_dependent = True      # counts from where the prompt ends

    def __init__(self, frequency_penalty: float, prompt_length: int):
        self.frequency_penalty = check_penalty("frequency_penalty", frequency_penalty)
        self.prompt_length = int(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = generated_counts(input_ids, self.prompt_length, scores.shape[-1], scores.dtype)
        return scores - self.frequency_penalty * counts


# Registration (listed in decoding/processors/beyond.py SAMPLERS): the knobs, the build, the places.


def _build_presence(settings, context):
    value = settings.presence_penalty
    return None if value is None or value == 0 else PresencePenaltyLogitsProcessor(value, context.prompt_length)


def _build_frequency(settings, context):
    value = settings.frequency_penalty
    return None if value is None or value == 0 else FrequencyPenaltyLogitsProcessor(value, context.prompt_length)


PRESENCE_PENALTY = Sampler(
    PresencePenaltyLogitsProcessor, stage=PENALTY, build=_build_presence,
    knobs=(Knob("presence_penalty", BEYOND, "subtract it from the score of every token already generated "
                "(OpenAI, vLLM; 0: off)", type=float, check=lambda name, v: check_penalty(name, v), values="[-2, 2]"),),
    places={"vllm": "after frequency_penalty", "llama.cpp": "after frequency_penalty",
            "mlx": "after repetition_penalty"})

FREQUENCY_PENALTY = Sampler(
    FrequencyPenaltyLogitsProcessor, stage=PENALTY, build=_build_frequency,
    knobs=(Knob("frequency_penalty", BEYOND, "subtract it times the token's count among the generated tokens "
                "(OpenAI, vLLM; 0: off)", type=float, check=lambda name, v: check_penalty(name, v), values="[-2, 2]"),),
    places={"vllm": "after repetition_penalty", "llama.cpp": "after repetition_penalty",
            "mlx": "after presence_penalty"})
