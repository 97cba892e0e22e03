"""DoLa: decoding by contrasting layers (Chuang et al. 2024, "DoLa: Decoding by Contrasting Layers
Improves Factuality in Large Language Models", ICLR).

Facts a model knows emerge in its later layers: DoLa scores each next token by how much its
log-probability grows from a *premature* layer ``m`` to the final layer ``N``,

    F(x) = log q_N(x) - log q_m(x)   for x with q_N(x) >= 0.1 * max_w q_N(w)    (-inf otherwise)

where ``q_j = softmax(lm_head(h_j))`` reads layer ``j``'s hidden state through the output head
(``j = 0`` is the embeddings). The condition is the *adaptive plausibility constraint*: only tokens
the final layer finds plausible compete (a filtered token's ``log q_m`` is replaced by ``-1e-3``).
The premature layer is picked per row and per step among the candidates (``dola_layers``) as the one
whose distribution is furthest from the final one, by Jensen-Shannon divergence:

    m = argmax_{j in candidates} JSD(q_N || q_j)

``F`` then goes through the call's processors like logits do (``repetition_penalty``, which the
paper recommends at 1.2, divides a positive ``F`` and multiplies a negative one, as for logits),
and the chooser (greedy, or sampling with ``do_sample=True``) picks the token.

``dola_layers``: ``"low"`` / ``"high"`` (the lower or upper half of the layers, every second one,
the reference's rule: :func:`premature_layers`) or a list of layer indices.

Differences from transformers 4.55.4 (docs/dola.md): the premature layer is chosen for each row (the
reference averages the divergences over the batch and uses one layer for every row), and
``num_return_sequences`` gives that many sequences per prompt (the reference returns one).
"""

from __future__ import annotations

import math
from typing import Any, Union

import torch
import torch.nn.functional as F

from .call import PreparedCall

#: The adaptive plausibility constraint's threshold, relative to the most likely token (the paper's alpha).
RELATIVE_TOP = 0.1


def premature_layers(model: Any, dola_layers: Union[str, list[int]]) -> list[int]:
    """The candidate premature layers: ``"low"``, ``"high"`` or the listed indices.

    For ``N <= 40`` layers, ``"low"`` is ``range(start, N // 2, 2)`` and ``"high"`` ``range(N // 2, N, 2)``;
    for deeper models, the 20 lowest / highest layers, every second one. ``start`` skips the embedding
    layer (0) when the output head shares its weights (reading it back would be the identity): 2, or
    1 for a two-layer model.

    Raises:
        ValueError: a listed index is not a layer below the last one (``0 .. N - 1``).
    """
    config, n = model.config, model.config.get_text_config().num_hidden_layers
    if isinstance(dola_layers, list):
        beyond = [i for i in dola_layers if i >= n]
        if beyond:
            raise ValueError(f"dola_layers={dola_layers!r} names layer(s) {beyond}, but the premature layers of "
                             f"this {n}-layer model are 0 (the embeddings) .. {n - 1}.")
        return list(dola_layers)
    start = 0 if not config.tie_word_embeddings else (2 if n > 2 else 1 if n == 2 else 0)
    if dola_layers == "low":
        stop = n // 2 if n <= 40 else 20
        return list(range(start, stop, 2)) or [start]
    return list(range(n // 2, n, 2)) if n <= 40 else list(range(n - 20, n, 2))


def most_divergent(final: torch.FloatTensor, premature: torch.FloatTensor) -> torch.LongTensor:
    """Each row's premature layer: the one whose distribution is furthest from the final one (Jensen-Shannon).

    Args:
        final: ``[rows, vocab]`` float32, the final layer's logits.
        premature: ``[layers, rows, vocab]``, each candidate layer's logits.

    Returns:
        ``[rows]`` int64, an index into ``premature``'s first dimension (ties: the first candidate).
    """
    final_p, premature_p = F.softmax(final, dim=-1), F.softmax(premature, dim=-1)
    middle = 0.5 * (final_p[None] + premature_p)                                      # [layers, rows, vocab]
    kl_final = F.kl_div(F.log_softmax(final, dim=-1)[None], middle, reduction="none").mean(-1)
    kl_premature = F.kl_div(F.log_softmax(premature, dim=-1), middle, reduction="none").mean(-1)
    return (0.5 * (kl_final + kl_premature)).argmax(dim=0)                            # JSD [layers, rows] -> [rows]


def contrast(final: torch.FloatTensor, base: torch.FloatTensor) -> torch.FloatTensor:
    """DoLa's scores ``log q_N - log q_m`` under the adaptive plausibility constraint.

    Args:
        final: ``[rows, vocab]`` float32, the final layer's logits.
        base: ``[rows, vocab]``, each row's premature layer's logits.

    Returns:
        ``[rows, vocab]``, ``-inf`` where the final layer finds the token implausible.
    """
    final_log, base_log = final.log_softmax(dim=-1), base.log_softmax(dim=-1)
    threshold = final_log.max(dim=-1, keepdim=True).values + math.log(RELATIVE_TOP)
    implausible = final_log < threshold
    return final_log.masked_fill(implausible, -float("inf")) - base_log.masked_fill(implausible, -1e-3)


def dola(call: PreparedCall):
    """The table's entry for ``dola_layers`` (greedy or sampling, one beam)."""
    layers = premature_layers(call.model, call.settings.dola_layers)
    head = call.model.get_output_embeddings()
    runner = call.new_runner(output_hidden_states=True)
    state, processors = call.new_state(), call.processors
    choose = call.chooser(state)
    processors.reset()
    logits = runner.prefill(call.input_ids)                                  # [rows, vocab] float32
    while True:
        hidden = runner.last_output.hidden_states                            # [rows, length, hidden] each
        with torch.no_grad():
            premature = torch.stack([head(hidden[j][:, -1]).to(logits.device) for j in layers])  # [layers, rows, vocab]
        base = premature[most_divergent(logits, premature), torch.arange(call.rows, device=logits.device)]
        scores = processors(state.sequences, contrast(logits, base))
        state.record(logits, scores, runner.last_output)
        tokens = state.append(choose(scores))
        processors.accept(tokens)
        if state.done:
            return call.finish(state, runner)
        logits = runner.step(tokens)


def check(call: PreparedCall) -> None:
    """Refuse what DoLa cannot do, before the first forward pass."""
    if call.assistant_model is not None:
        raise ValueError("DoLa (dola_layers) cannot use an assistant_model; remove dola_layers or the assistant_model.")
    if call.model.get_output_embeddings() is None:
        raise ValueError("DoLa (dola_layers) reads the hidden layers through the model's output head, and this "
                         "model has none (get_output_embeddings() is None).")
    premature_layers(call.model, call.settings.dola_layers)
