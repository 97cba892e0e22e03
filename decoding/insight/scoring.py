"""``decoding.score``: teacher-forced per-token log-probabilities of any sequences, under any settings.

``generate(..., output_scores=True)`` plus :func:`~decoding.scores.compute_transition_scores` tells how
likely the tokens a run *chose* were. :func:`score` answers the same question for tokens nobody
generated: a reference answer, a sequence from another model, a hand-edited one. It runs the model
once over the whole sequences (teacher forcing), then walks the generated positions in order,
feeding each position's logits through the processor pipeline that ``generate`` would build for
the same keyword arguments (the same code builds it), exactly as the decoding loop would have fed
them had it chosen these tokens:

- greedy search and sampling: ``processed = pipeline(ids, logits)``;
- beam search and beam sampling (``num_beams > 1``): ``processed = pipeline(ids, log_softmax(logits))``,
  as the beam loop does (there, the processed scores are log-probabilities before the warpers).

So on ``generate``'s own output, ``score(...).scores`` equals
``compute_transition_scores(out.sequences, out.scores, out.beam_indices)`` and ``raw_logprobs``
equals ``compute_transition_scores(out.sequences, out.logits, normalize_logits=True)``, up to the
last bits of float arithmetic (one forward over the whole sequence instead of one per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from ..config import resolve_settings
from ..inputs import infer_attention_mask, special_tokens
from ..processors import LogitsProcessorList, PipelineContext, build_pipeline
from ..processors.orders import reorder
from ..runner import model_device
from ..seeding import row_seeds
from ..validation import check_input_ids, check_not_yet_implemented, check_settings, input_vocab_size


@dataclass
class SequenceScores:
    """What :func:`score` returns; every tensor is ``[rows, g]`` over the ``g`` scored (generated) positions.

    Attributes:
        tokens: int64, the scored tokens (``sequences[:, prompt_length:]``).
        raw_logprobs: float32, ``log_softmax`` of the model's raw logits at each token (nats).
        scores: float32, the processed score of each token: what ``out.scores`` holds for it (processed
            logits for greedy search and sampling, processed log-probabilities with beams); ``-inf``
            where a processor removed the token.
        logprobs: float32, ``log_softmax`` of the processed scores at each token: its log-probability
            under the distribution the settings sample from (``-inf`` where filtered).
        raw_ranks / ranks: int64, 0-based rank of the token among the raw / processed scores (0: the
            argmax; the count of tokens with a strictly higher score, so a tie shares the better rank).
        alive: int64, how many tokens had a finite processed score at that position.
        mask: bool, False after a row's first end-of-sequence token (the padding a finished row
            carries); those positions are scored all the same, as the reference scores a finished
            row's padding in greedy search and sampling.
    """

    tokens: torch.LongTensor
    raw_logprobs: torch.FloatTensor
    scores: torch.FloatTensor
    logprobs: torch.FloatTensor
    raw_ranks: torch.LongTensor
    ranks: torch.LongTensor
    alive: torch.LongTensor
    mask: torch.BoolTensor

    def total(self, processed: bool = True) -> torch.FloatTensor:
        """``[rows]`` float32: the sum over unmasked positions of ``logprobs`` (or ``raw_logprobs``)."""
        values = self.logprobs if processed else self.raw_logprobs
        return values.masked_fill(~self.mask, 0.0).sum(-1)


def _rank(scores: torch.Tensor, tokens: torch.LongTensor) -> torch.LongTensor:
    """``[rows]``: how many entries of each row of ``scores`` (``[rows, vocab]``) beat ``tokens``' score."""
    own = scores.gather(-1, tokens[:, None])
    return (scores > own).sum(-1)


def _full_mask(sequences: torch.LongTensor, prompt_length: int, attention_mask: Optional[torch.Tensor],
               pad: Optional[torch.Tensor], eos: Optional[torch.Tensor]) -> torch.LongTensor:
    """``[rows, length]`` 0/1: the prompt's mask (given, or inferred as ``generate`` infers it), then ones."""
    rows, length = sequences.shape
    if attention_mask is None:
        prompt_mask = infer_attention_mask(sequences[:, :prompt_length], pad, eos)
    elif attention_mask.shape == (rows, length):
        return attention_mask.long()
    elif attention_mask.shape == (rows, prompt_length):
        prompt_mask = attention_mask.long()
    else:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; pass the prompt's mask "
                         f"[{rows}, {prompt_length}] or the whole sequences' [{rows}, {length}].")
    generated = torch.ones(rows, length - prompt_length, dtype=torch.long, device=prompt_mask.device)
    return torch.cat([prompt_mask, generated], dim=-1)


@torch.no_grad()
def _logits(model: Any, sequences: torch.LongTensor, mask: torch.LongTensor, prompt_length: int) -> torch.Tensor:
    """``[rows, g, vocab]`` float32: the logits that predicted each of the ``g`` tokens after the prompt.

    One forward over the whole sequences, with the positions and mask the decoding loop uses
    (``cumsum(mask) - 1``, pads at 0; the mask not passed when it is all ones).
    """
    device = model_device(model)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    kwargs = {} if bool((mask == 1).all()) else {"attention_mask": mask.to(device)}
    out = model(input_ids=sequences.to(device), position_ids=positions.to(device), use_cache=False,
                return_dict=True, **kwargs)
    return out.logits[:, prompt_length - 1:-1].to(dtype=torch.float32, device=sequences.device)


def scoring_pipeline(model: Any, sequences: torch.LongTensor, prompt_length: int, mask: torch.LongTensor,
                     settings: Any, logits_processor: Iterable[Callable] = (), order: Any = None,
                     seed: Any = None, tokenizer: Any = None) -> LogitsProcessorList:
    """The processors ``generate`` builds for ``settings`` (the same builder), set up for these sequences.

    The context is the one ``generate`` makes, with each returned row as its own prompt row (a
    processor that looks at the prompt sees that row's prompt).
    """
    eos, _ = special_tokens(settings, sequences.device)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    vocab_size = int(weight.shape[0]) if weight is not None else input_vocab_size(model)
    context = PipelineContext(vocab_size=vocab_size, prompt_length=prompt_length, eos_token_ids=eos,
                              num_beams=settings.num_beams, device=sequences.device,
                              max_length=sequences.shape[1], prompt_ids=sequences[:, :prompt_length],
                              attention_mask=mask[:, :prompt_length], model=model,
                              use_cache=bool(settings.use_cache), seeds=row_seeds(seed, sequences.shape[0]),
                              tokenizer=tokenizer)
    return reorder(build_pipeline(settings, context, logits_processor or []), order)


def score(model: Any, sequences: torch.LongTensor, prompt_length: int,
          attention_mask: Optional[torch.LongTensor] = None, *, generation_config: Any = None,
          logits_processor: Optional[Iterable[Callable]] = None, order: Any = None, seed: Any = None,
          tokenizer: Any = None, **kwargs: Any) -> SequenceScores:
    """Score ``sequences[:, prompt_length:]`` token by token under the settings of a ``generate`` call.

    Args:
        model: a ``transformers`` causal LM.
        sequences: ``[rows, length]`` int64: left-padded prompts followed by the tokens to score
            (``out.sequences`` of a ``generate`` call, or any ids).
        prompt_length: how many leading columns are the (padded) prompt; positions from there on are scored.
        attention_mask: ``[rows, prompt_length]`` (or ``[rows, length]``) 0/1; inferred from
            ``pad_token_id`` as ``generate`` infers it when omitted.
        generation_config, logits_processor, order, seed, tokenizer: as in ``generate``.
        **kwargs: generation keywords (``do_sample``, ``temperature``, ``top_k``, ``top_p``,
            ``repetition_penalty``, ``num_beams``, ``eos_token_id``, ...), read as ``generate`` reads them
            (the model's generation config fills what is not given). Keywords that only change the
            search (``max_new_tokens``, ``num_return_sequences``, ``length_penalty``, ...) are accepted
            and change nothing here.

    Returns:
        :class:`SequenceScores`: raw and processed log-probabilities, processed scores, ranks, alive
        counts and the finished-row mask, each ``[rows, length - prompt_length]``.

    Raises:
        ValueError: ``prompt_length`` leaves nothing to score or no prompt token; a bad mask; bad settings.
        NotImplementedError: a keyword ``generate`` refuses.
    """
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2:
        raise ValueError("sequences must be a [rows, length] int64 tensor (for one sequence, ids[None]).")
    if not 1 <= prompt_length < sequences.shape[1]:
        raise ValueError(f"prompt_length must be at least 1 and less than the sequences' length "
                         f"{sequences.shape[1]} (there must be a token to condition on and one to score), "
                         f"got {prompt_length}.")
    check_input_ids(sequences, input_vocab_size(model))
    sequences = sequences.long()
    settings = resolve_settings(model, generation_config, dict(kwargs))
    check_not_yet_implemented(settings, {"seed": seed, "order": order})
    check_settings(settings)
    eos, pad = special_tokens(settings, sequences.device)
    mask = _full_mask(sequences, prompt_length, attention_mask, pad, eos)
    processors = scoring_pipeline(model, sequences, prompt_length, mask, settings, logits_processor or [],
                                  order, seed, tokenizer)
    beams = settings.num_beams > 1

    logits = _logits(model, sequences, mask, prompt_length)             # [rows, g, vocab]
    tokens = sequences[:, prompt_length:]                                 # [rows, g]
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in ("raw", "scores", "logprobs", "raw_ranks", "ranks",
                                                                "alive")}
    processors.reset()
    for t in range(tokens.shape[1]):
        raw, token = logits[:, t], tokens[:, t]
        raw_logprobs = torch.log_softmax(raw, dim=-1)
        processed = processors(sequences[:, :prompt_length + t], raw_logprobs.clone() if beams else raw.clone())
        columns["raw"].append(raw_logprobs.gather(-1, token[:, None])[:, 0])
        columns["scores"].append(processed.gather(-1, token[:, None])[:, 0])
        columns["logprobs"].append(torch.log_softmax(processed, dim=-1).gather(-1, token[:, None])[:, 0])
        columns["raw_ranks"].append(_rank(raw, token))
        columns["ranks"].append(_rank(processed, token))
        columns["alive"].append(torch.isfinite(processed).sum(-1))
        processors.accept(token)
    stacked = {k: torch.stack(v, dim=1) for k, v in columns.items()}

    ended = torch.zeros_like(tokens, dtype=torch.bool)
    if eos is not None:
        is_eos = torch.isin(tokens, eos)
        ended[:, 1:] = is_eos.cumsum(-1)[:, :-1] > 0                       # strictly after the first eos
    return SequenceScores(tokens=tokens, raw_logprobs=stacked["raw"], scores=stacked["scores"],
                          logprobs=stacked["logprobs"], raw_ranks=stacked["raw_ranks"], ranks=stacked["ranks"],
                          alive=stacked["alive"], mask=~ended)
