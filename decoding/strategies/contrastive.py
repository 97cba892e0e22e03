"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", NeurIPS).

Each step takes the ``k = top_k`` most likely next tokens ``V_k`` of every row and picks

    x_t = argmax_{v in V_k} (1 - alpha) * p(v | x_<t) - alpha * max_{j < t} cos(h_v, h_j)

where ``h_v`` is the last layer's hidden state of the candidate ``v`` (fed after the context) and
``h_j`` those of the context's tokens (padding excluded). The first term is the model's confidence,
the second the *degeneration penalty*: a candidate whose representation repeats the context's is
held back, which keeps greedy decoding's coherence without its loops.

Scoring a candidate needs its hidden state, so each step feeds the ``k`` candidates of every row in
one batched forward (the cache's rows repeated ``k`` times with :meth:`ModelRunner.repeat`), then
keeps the chosen candidate's cache rows with :meth:`ModelRunner.select`. The chosen candidate's
logits of that forward are the next step's logits: one forward per step, ``k`` times wider.
``low_memory=True`` feeds the candidates one at a time instead (``k`` forwards of the original
width, each undone with :meth:`ModelRunner.crop`) and the chosen token once more for the cache:
the same tokens, with a ``k`` times smaller peak.

Differences from transformers 4.55.4, the last release that runs it natively (docs/contrastive-search.md):
padded positions are excluded from the penalty even when their hidden states are NaN, and
``low_memory=True`` works for batches.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..caches import is_static, past_length
from ..runner import ModelRunner
from .call import PreparedCall


def degeneration_penalty(context: torch.FloatTensor, context_mask: torch.BoolTensor,
                         candidates: torch.FloatTensor) -> torch.FloatTensor:
    """``max_j cos(h_v, h_j)`` over the real (unpadded) context positions of each candidate's row.

    Args:
        context: ``[rows, length, hidden]``, the last layer's hidden states of the context.
        context_mask: ``[rows, length]`` bool, False at padding.
        candidates: ``[rows, k, hidden]``, the candidates' last hidden states.

    Returns:
        ``[rows, k]``, each in ``[-1, 1]``.
    """
    k = candidates.shape[1]
    context = context.repeat_interleave(k, dim=0)                         # [rows * k, length, hidden]
    context = context / context.norm(dim=2, keepdim=True)
    candidates = candidates.reshape(-1, 1, candidates.shape[-1])          # [rows * k, 1, hidden]
    candidates = candidates / candidates.norm(dim=2, keepdim=True)
    cosine = torch.matmul(context, candidates.transpose(1, 2)).squeeze(-1)  # [rows * k, length]
    cosine = cosine.masked_fill(~context_mask.repeat_interleave(k, dim=0), -float("inf"))
    return cosine.max(dim=-1).values.view(-1, k)


def score_candidates(runner: ModelRunner, candidates: torch.LongTensor, low_memory: bool):
    """Feed every row's ``k`` candidates after its context; return what each one gives.

    ``candidates``: ``[rows, k]`` int64. Returns ``(logits [rows * k, vocab] float32, outputs)``,
    ``outputs`` holding the model's ``hidden_states`` (and ``attentions``) with rows ``r * k + i``.
    Afterwards the runner holds ``rows * k`` rows (batched) or its ``rows`` rows unchanged (``low_memory``).
    """
    k = candidates.shape[1]
    if not low_memory:
        runner.repeat(k)
        return runner.step(candidates.reshape(-1)), runner.last_output
    logits, outputs = [], []
    for i in range(k):
        logits.append(runner.step(candidates[:, i]))
        outputs.append(runner.last_output)
        runner.crop(1)

    def layers(name):
        per_candidate = [getattr(output, name, None) for output in outputs]
        return None if per_candidate[0] is None else tuple(interleaved(list(layer)) for layer in zip(*per_candidate))
    return interleaved(logits), SimpleNamespace(hidden_states=layers("hidden_states"), attentions=layers("attentions"))


def interleaved(per_candidate: list[torch.Tensor]) -> torch.Tensor:
    """``k`` tensors ``[rows, ...]`` -> ``[rows * k, ...]``: row ``r * k + i`` from candidate ``i``, as batched."""
    return torch.stack(per_candidate, dim=1).flatten(0, 1)


def chosen(outputs, rows_kept: torch.Tensor):
    """The chosen candidates' hidden states and attentions (rows ``rows_kept`` of the candidates')."""
    def pick(layers):
        return None if layers is None else tuple(layer[rows_kept.to(layer.device)] for layer in layers)
    return SimpleNamespace(hidden_states=pick(outputs.hidden_states),
                           attentions=pick(getattr(outputs, "attentions", None)))


def contrastive_search(call: PreparedCall):
    """The table's entry for ``penalty_alpha > 0`` with ``top_k > 1`` (greedy, one beam)."""
    k, alpha, low_memory = call.settings.top_k, call.settings.penalty_alpha, bool(call.settings.low_memory)
    runner = call.new_runner(output_hidden_states=True, croppable=low_memory or call.return_dict)
    state, processors = call.new_state(), call.processors
    processors.reset()
    logits = runner.prefill(call.input_ids)                                  # [rows, vocab] float32
    step_output = runner.last_output
    context = step_output.hidden_states[-1]                                  # [rows, prompt_len, hidden]
    context_mask = call.attention_mask.to(context.device).bool()             # [rows, prompt_len], False: padding
    first_candidate = torch.arange(call.rows, device=context.device) * k     # row r's candidates: r * k + i
    while True:
        scores = processors(state.sequences, logits)
        state.record(logits, scores, step_output)
        top_probs, top_ids = torch.softmax(scores, dim=-1).topk(k, dim=-1)   # [rows, k]
        candidate_logits, outputs = score_candidates(runner, top_ids, low_memory)
        hidden = outputs.hidden_states[-1][:, -1].to(context.device)         # [rows * k, hidden]
        penalty = degeneration_penalty(context, context_mask, hidden.view(call.rows, k, -1))
        best = ((1.0 - alpha) * top_probs.to(penalty.device) - alpha * penalty).max(dim=-1).indices   # [rows]
        kept = first_candidate + best                                        # [rows] rows of the candidates
        tokens = top_ids.gather(1, best.to(top_ids.device)[:, None]).squeeze(1)
        if low_memory:
            runner.step(tokens)                                              # the chosen token, for the cache
        else:
            runner.select(kept)
        context = torch.cat([context, hidden[kept, None]], dim=1)
        context_mask = torch.cat([context_mask, context_mask.new_ones(call.rows, 1)], dim=1)
        step_output = chosen(outputs, kept)
        logits = candidate_logits[kept.to(candidate_logits.device)]
        tokens = state.append(tokens)                                        # finished rows get pad
        processors.accept(tokens)
        if state.done:
            if call.return_dict:
                runner.crop(1)      # the cache ends with the last token returned, as in the other strategies
            return call.finish(state, runner)


def check(call: PreparedCall) -> None:
    """Refuse what contrastive search cannot do, before the first forward pass."""
    if call.assistant_model is not None:
        raise ValueError("contrastive search (penalty_alpha > 0 with top_k > 1) cannot use an assistant_model; "
                         "remove penalty_alpha, or the assistant_model.")
    if is_static(call.cache):
        raise ValueError("contrastive search cannot run on a static cache (it repeats every row top_k times and "
                         "feeds one position past the last token returned); leave cache_implementation unset.")
    if call.cache is not None and past_length(call.cache) > 0:
        raise NotImplementedError(
            "contrastive search compares candidates with the hidden states of the whole context, which a "
            "past_key_values passed in does not hold; pass the whole sequence without past_key_values.")
    vocab = call.context.vocab_size
    if vocab is not None and call.settings.top_k > vocab:
        raise ValueError(f"contrastive search scores top_k={call.settings.top_k} candidates, but the vocabulary has "
                         f"{vocab} tokens; set top_k <= {vocab} (4 to 10 is usual).")
