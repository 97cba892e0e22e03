"""Every keyword of ``generate``, declared once: :data:`KNOBS`; and those of the reference it refuses: :data:`REFUSED`.

Each :class:`~decoding.declarations.Knob` gives a keyword's reference default, its type (how the
command line parses it), its valid range (the check that raises its ``ValueError``), its help
text, its group, its companion default (beyond the reference) and whether it is a CLI flag. The
knobs of the samplers beyond the reference are declared in each sampler's own module and come in
through :data:`decoding.processors.beyond.SAMPLERS`.

Derived from this table: ``config.CONFIG_FIELDS``, ``config.GLOBAL_DEFAULTS`` and
``config.CALL_ARGUMENTS`` (settings resolution and the "did you mean" hints), the single-knob
checks of ``validation.check_settings``, the flags of ``cli.py`` and the keyword tables of
docs/api.md (:func:`markdown_tables`; a test keeps the docs equal to it, and
``python -c "import decoding.knobs as k; k.write_docs()"`` rewrites them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .caches import IMPLEMENTATIONS
from .checks import Check, integer, interval, is_int, is_number, positive
from .constraints import check_constraints, check_force_words_ids
from .declarations import (CALL, GROUPS, LENGTH, OUTPUTS, PROCESSORS, SPECIAL_TOKENS, SPECULATIVE, STRATEGY,
                           Knob, literal)
from .processors.beyond import SAMPLERS
from .processors.checks import (check_bad_words, check_bool, check_exponential_decay_value, check_forced_bos,
                                check_forced_eos, check_guidance, check_sequence_bias, check_token_list,
                                check_watermarking)

_early_stopping = Check(lambda v: v is None or v is True or v is False or v == "never",
                        "must be a boolean or 'never'", "True, False or 'never'",
                        after="; use True, False or 'never' (see docs/beam-search.md)")
_temperature = positive("must be a finite number >= 0 (> 0 when sampling)", strict=False)
_penalty = positive("has to be a finite number > 0 (1.0 disables it)")
_beams = integer("must be an integer >= 1", 1)
_dola_layers = Check(lambda v: v in ("low", "high")
                     or (isinstance(v, list) and bool(v) and all(is_int(i) and i >= 0 for i in v)),
                     "must be 'low', 'high' or a non-empty list of layer indices (ints >= 0; 0 is the embeddings)",
                     "'low', 'high' or a list of ints >= 0")

_REFERENCE_KNOBS = (
    # length
    Knob("max_length", LENGTH, "total length, prompt included; set nowhere: 20 new tokens, capped at the model's "
         "context", default=20, type=int, check=integer("must be a positive integer", 1)),
    Knob("max_new_tokens", LENGTH, "new tokens to generate at most (wins over max_length)", type=int,
         check=integer("must be an integer greater than 0", 1)),
    Knob("min_length", LENGTH, "eos is held back while the sequence (prompt included) is shorter", default=0,
         type=int, check=integer("has to be an integer >= 0", 0)),
    Knob("min_new_tokens", LENGTH, "eos is held back while fewer new tokens were generated", type=int,
         check=integer("has to be an integer >= 0", 0)),
    Knob("max_time", LENGTH, "seconds after which every row stops", type=float,
         check=positive("must be a positive number of seconds", finite=False, values="> 0 (seconds)")),
    Knob("stop_strings", LENGTH, "stop a row once its text ends with one of these strings (needs tokenizer=)",
         type=str, multi=True, values="a string or a list of strings", metavar="TEXT"),
    Knob("early_stopping", LENGTH, "beams: when the search stops (docs/beam-search.md)", default=False,
         type=literal, check=_early_stopping, metavar="{True,False,never}"),
    # strategy
    Knob("do_sample", STRATEGY, "sample instead of greedy decoding (with --seed for a reproducible run)",
         default=False, type=bool, values="True, False"),
    Knob("num_beams", STRATEGY, "> 1: beam search, or beam sampling with do_sample (docs/beam-search.md)",
         default=1, type=int, check=_beams, nullable=False),
    Knob("use_cache", STRATEGY, "keep the key/value cache (False feeds the whole sequence every step)",
         default=True, type=bool, values="True, False"),
    Knob("num_return_sequences", STRATEGY, "sequences per prompt (sampling; with beams, the best finished "
         "hypotheses, at most num_beams); rows ordered b0, b0, b1, b1, ...", default=1, type=int, check=_beams,
         nullable=False),
    Knob("length_penalty", STRATEGY, "beams: a finished hypothesis scores sum_logprobs / length ** "
         "length_penalty", default=1.0, type=float, values="finite"),
    # contrastive search and DoLa (docs/contrastive-search.md, docs/dola.md)
    Knob("penalty_alpha", STRATEGY, "> 0 with top_k > 1: contrastive search, scoring (1 - alpha) * p - alpha * "
         "(max cosine similarity with the context)", type=float,
         check=interval("must be a number in [0, 1] (0 or None: off; > 0 with top_k > 1: contrastive search)",
                        0, 1)),
    Knob("low_memory", STRATEGY, "contrastive search: score the top_k candidates one forward at a time (same "
         "tokens, less memory)", type=bool, check=check_bool, values="True, False"),
    Knob("dola_layers", STRATEGY, "DoLa: contrast the final layer with a premature layer picked per step among "
         "'low', 'high' or these layer indices", check=_dola_layers,
         values="'low', 'high' or a non-empty list of ints >= 0"),
    # diverse (group) beam search and constrained beam search (docs/diverse-beam-search.md,
    # docs/constrained-beam-search.md); the rules between them and num_beams: strategies/beam/{groups,constrained}.py
    Knob("num_beam_groups", STRATEGY, "> 1: diverse beam search, num_beams split into this many groups decoded in "
         "turn (docs/diverse-beam-search.md)", default=1, type=int, check=_beams, nullable=False),
    Knob("diversity_penalty", STRATEGY, "diverse beam search: subtracted from a token's score once per beam of an "
         "earlier group that chose it at this step", default=0.0, type=float,
         check=positive("must be a finite number >= 0 (> 0 with num_beam_groups > 1)", strict=False)),
    Knob("force_words_ids", STRATEGY, "constrained beam search: [[ids], ...] phrases that must appear, or "
         "[[[ids], [ids]], ...] one of several (docs/constrained-beam-search.md)", check=check_force_words_ids,
         values="[[ids...], ...] or [[[ids...], ...], ...]", flag=False),
    Knob("constraints", STRATEGY, "constrained beam search: decoding.PhrasalConstraint / DisjunctiveConstraint "
         "objects that every returned sequence satisfies", check=check_constraints,
         values="a list of decoding.PhrasalConstraint / DisjunctiveConstraint", flag=False),
    # processors (the reference's)
    Knob("temperature", PROCESSORS, "divide the scores by T before sampling", default=1.0, type=float,
         check=_temperature, values=">= 0, finite (> 0 when sampling)"),
    Knob("top_k", PROCESSORS, "sample among the k most likely tokens only (0: off)", default=50, type=int,
         check=integer("must be an integer >= 0 (0 disables it)", 0)),
    Knob("top_p", PROCESSORS, "sample among the smallest set of tokens whose probability reaches p (1: off)",
         default=1.0, type=float, check=interval("must be a number in [0, 1] (1 disables it)", 0, 1)),
    Knob("min_p", PROCESSORS, "drop tokens less likely than min_p times the most likely one", type=float,
         check=interval("has to be a number in [0, 1]", 0, 1)),
    Knob("typical_p", PROCESSORS, "keep the most typical tokens up to this mass (1: off)", default=1.0,
         type=float, check=interval("has to be a number in (0, 1] (1 disables it)", 0, 1, low_open=True)),
    Knob("epsilon_cutoff", PROCESSORS, "drop tokens whose probability is below epsilon (0: off)", default=0.0,
         type=float, check=interval("has to be a number in [0, 1) (0 disables it)", 0, 1, high_open=True)),
    Knob("eta_cutoff", PROCESSORS, "drop tokens below min(eta, sqrt(eta) * exp(-entropy)) (0: off)", default=0.0,
         type=float, check=interval("has to be a number in [0, 1) (0 disables it)", 0, 1, high_open=True)),
    Knob("top_h", PROCESSORS, "keep the best tokens while their entropy stays within top_h times the total",
         type=float, check=interval("has to be a number in (0, 1]", 0, 1, low_open=True)),
    Knob("repetition_penalty", PROCESSORS, "penalize tokens already in the prompt or the output (1.0: off)",
         default=1.0, type=float, check=_penalty),
    Knob("encoder_repetition_penalty", PROCESSORS, "favour (> 1) the tokens of the prompt (1.0: off)",
         default=1.0, type=float, check=_penalty),
    Knob("no_repeat_ngram_size", PROCESSORS, "never repeat an n-gram of this size (0: off)", default=0, type=int,
         check=integer("has to be an integer >= 0 (0 disables it)", 0)),
    Knob("encoder_no_repeat_ngram_size", PROCESSORS, "never repeat an n-gram of the prompt of this size (0: off)",
         default=0, type=int, check=integer("has to be an integer >= 0 (0 disables it)", 0)),
    Knob("bad_words_ids", PROCESSORS, "token sequences that must not be generated", check=check_bad_words,
         values="non-empty list of non-empty lists of ids"),
    Knob("sequence_bias", PROCESSORS, "add a bias to a token when it would complete a sequence",
         check=check_sequence_bias, values="{(ids...): bias} or [[[ids...], bias], ...]"),
    Knob("suppress_tokens", PROCESSORS, "these ids are never generated", check=check_token_list,
         values="list of ids"),
    Knob("begin_suppress_tokens", PROCESSORS, "these ids are not generated as the first new token",
         check=check_token_list, values="list of ids"),
    Knob("forced_bos_token_id", PROCESSORS, "force this id as the first token after a one-token prompt",
         check=check_forced_bos, values="one id"),
    Knob("forced_eos_token_id", PROCESSORS, "force one of these ids as the last token at max_length",
         check=check_forced_eos, values="an id or a non-empty list of ids"),
    Knob("exponential_decay_length_penalty", PROCESSORS, "raise the eos score exponentially after a start "
         "length: (start, factor)", check=check_exponential_decay_value,
         values="(start: int >= 0, factor: > 0)"),
    Knob("remove_invalid_values", PROCESSORS, "replace nan and inf scores by finite ones", default=False,
         type=bool, check=check_bool, values="True, False"),
    Knob("renormalize_logits", PROCESSORS, "log-softmax the scores after every processor (last)", default=False,
         type=bool, check=check_bool, values="True, False"),
    Knob("guidance_scale", PROCESSORS, "classifier-free guidance with the negative prompt (1: off)", type=float,
         check=check_guidance, values=">= 0, finite"),
    Knob("watermarking_config", PROCESSORS, "a WatermarkingConfig or SynthIDTextWatermarkingConfig (or dict)",
         check=check_watermarking, values="a watermarking config", flag=False),
    # special tokens
    Knob("bos_token_id", SPECIAL_TOKENS, "the first token when input_ids is None (default: the model's)",
         values="an id"),
    Knob("eos_token_id", SPECIAL_TOKENS, "any of these ids ends a row (default: the model's)",
         values="an id or a list of ids"),
    Knob("pad_token_id", SPECIAL_TOKENS, "written after a row has ended (default: the model's, else eos[0])",
         values="an id"),
    # outputs
    Knob("return_dict_in_generate", OUTPUTS, "return a GenerateOutput instead of a tensor", default=False,
         flag=False, values="True, False"),
    Knob("output_scores", OUTPUTS, "record the processed scores of every step (beams: also sequences_scores)",
         default=False, flag=False, values="True, False"),
    Knob("output_logits", OUTPUTS, "record the raw logits of every step", default=False, flag=False,
         values="True, False"),
    Knob("output_attentions", OUTPUTS, "record the attention weights of every step", flag=False,
         values="True, False"),
    Knob("output_hidden_states", OUTPUTS, "record the hidden states of every step", flag=False,
         values="True, False"),
    # speculative decoding (docs/speculative.md); their checks run with the speculative setup
    Knob("num_assistant_tokens", SPECULATIVE, "drafts per round (draft model or early exit); not passed: the "
         "drafting model's generation config", default=20, type=int, values="int >= 1"),
    Knob("num_assistant_tokens_schedule", SPECULATIVE, "'heuristic' / 'heuristic_transient': +2 drafts after a "
         "fully accepted round, else -1 (floor 1)", default="constant", type=str,
         values="'constant', 'heuristic', 'heuristic_transient'"),
    Knob("assistant_confidence_threshold", SPECULATIVE, "a draft stops after a token whose probability is below "
         "it (0 or None: off)", default=0.4, type=float, values="[0, 1)"),
    Knob("prompt_lookup_num_tokens", SPECULATIVE, "speculate with drafts copied from earlier n-grams of the "
         "sequence", type=int, values="int >= 1"),
    Knob("max_matching_ngram_size", SPECULATIVE, "the longest n-gram prompt lookup matches (None: 2)", type=int,
         values="int >= 1"),
    Knob("assistant_early_exit", SPECULATIVE, "speculate with drafts from the model's own first k layers",
         type=int, values="int >= 1"),
)

_CALL_ARGUMENTS = (
    Knob("generation_config", CALL, "a GenerationConfig (or dict); keyword arguments override it", flag=False),
    Knob("logits_processor", CALL, "extra processors, merged as the reference merges them", flag=False),
    Knob("stopping_criteria", CALL, "extra stopping criteria, merged likewise", flag=False),
    Knob("streamer", CALL, "an object with put(ids) and end()", flag=False),
    Knob("tokenizer", CALL, "the model's tokenizer: needed for stop_strings and string dry_sequence_breakers",
         flag=False),
    Knob("prefix_allowed_tokens_fn", CALL, "fn(batch_id, row_ids) -> the ids allowed next", flag=False),
    Knob("negative_prompt_ids", CALL, "the negative prompt of guidance_scale, [batch, n] int64", flag=False),
    Knob("negative_prompt_attention_mask", CALL, "its 0/1 mask", flag=False),
    Knob("assistant_model", CALL, "a draft model sharing the tokenizer: speculative decoding", flag=False),
    Knob("custom_generate", CALL, "a callable written for model.generate(custom_generate=...), or a local folder "
         "holding custom_generate/generate.py (with trust_remote_code=True); a Hub repository is refused", flag=False),
    Knob("inputs", CALL, "the reference's name for input_ids (give one of the two)", flag=False),
    # drop-in (issue 12): the prompt as embeddings; ranks kept in step
    Knob("synced_gpus", CALL, "greedy and sampling: every torch.distributed rank keeps stepping until all are done "
         "(a model sharded across ranks: DeepSpeed ZeRO-3, FSDP); None: False", flag=False),
    Knob("inputs_embeds", CALL, "the prompt as embeddings [batch, len, hidden], fed by the prefill; with or without "
         "input_ids (which then start the returned sequences)", flag=False),
    Knob("seed", CALL, "beyond the reference: an int (row r uses seed + r) or one int >= 0 per row: per-row "
         "random streams (not with num_beams > 1)", flag=False),
    Knob("order", CALL, "beyond the reference: 'hf' (default), 'vllm', 'llama.cpp', 'mlx' or a list of processor "
         "names (docs/pipeline.md)", flag=False),
    Knob("output_beam_tree", CALL, "beyond the reference: with beams and return_dict_in_generate, the search tree "
         "in out.trace['beam_tree']", default=False, flag=False),
    Knob("strategy", CALL, "beyond the reference: your own loop, strategy(call) -> GenerateOutput "
         "(docs/strategies.md)", flag=False),
    # trace (issue 14): the per-step trace, decoding/insight/trace.py
    Knob("trace", CALL, "beyond the reference: True (or a decoding.insight.Tracer) records each step's candidates at "
         "every processor stage in out.trace (docs/inspecting.md)", default=False, flag=False),
)


# caches (decoding/caches.py): the reference's cache keywords and past_key_values
_CACHE_KNOBS = (
    Knob("cache_implementation", STRATEGY, "the key/value cache: None/'dynamic' (grows), 'static' (fixed shape, "
         "sized to the call), 'quantized' (with cache_config), ... (docs/api.md#caches)", type=str,
         check=Check(lambda v: isinstance(v, str) and v in IMPLEMENTATIONS + ("paged",),
                     f"must be one of {IMPLEMENTATIONS + ('paged',)} (or None)", "a cache name")),
    Knob("cache_config", STRATEGY, "options of the quantized cache: backend ('quanto', 'hqq', 'fp8'), nbits, "
         "q_group_size, residual_length, ...", check=Check(lambda v: isinstance(v, dict), "must be a dict", "a dict"),
         flag=False),
    Knob("max_cache_len", STRATEGY, "a static cache holds at least this many positions (one shape for calls of "
         "different lengths)", type=int, check=integer("must be an integer >= 1", 1)),
    Knob("past_key_values", CALL, "a cache to continue (a previous call's out.past_key_values, a DynamicCache): "
         "pass the whole sequence, or the new tokens with the whole sequence's attention_mask", flag=False),
    Knob("cache", CALL, "transformers 5.24's name for past_key_values (either name works)", flag=False),
)


# compiled path (issue 15, decoding/compiled.py): the decode step captured with torch.compile
_COMPILE_KNOBS = (
    Knob("compile", STRATEGY, "beyond the reference: True compiles the decode step with torch.compile on a static "
         "cache (built when cache_implementation is unset; its length bucketed to a multiple of 64), on any device "
         "(on the CPU with inductor's freezing and C++ wrapper, and up to 16 rows its C++ GEMM template with q/k/v and "
         "gate/up products concatenated); None: as the reference decides (docs/performance.md)", type=bool, check=check_bool, values="True, False",
         flag=False),
    Knob("compile_config", STRATEGY, "a transformers CompileConfig: its fullgraph, dynamic, backend, mode and "
         "options go to torch.compile; it compiles by itself on an accelerator, or with _compile_all_devices, as the "
         "reference's", check=Check(lambda v: isinstance(v, dict) or hasattr(v, "fullgraph"),
                                     "must be a transformers.CompileConfig (or a dict of its fields)",
                                     "a CompileConfig"), flag=False),
    Knob("disable_compile", STRATEGY, "True never compiles (wins over compile=True and compile_config)",
         default=False, type=bool, check=check_bool, values="True, False", flag=False),
)


def _table() -> dict[str, Knob]:
    """The reference's knobs, the registered samplers' knobs and the call arguments, by group (GROUPS order)."""
    declared = [*_REFERENCE_KNOBS, *(knob for sampler in SAMPLERS for knob in sampler.knobs), *_CALL_ARGUMENTS,
                *_CACHE_KNOBS, *_COMPILE_KNOBS]
    table: dict[str, Knob] = {}
    for knob in sorted(declared, key=lambda k: GROUPS.index(k.group)):   # stable: declaration order within a group
        if knob.name in table:
            raise ValueError(f"Knob {knob.name!r} is declared twice.")
        table[knob.name] = knob
    return table


#: Every keyword ``generate`` accepts besides ``model``, ``input_ids`` and ``attention_mask``.
KNOBS: dict[str, Knob] = _table()


@dataclass(frozen=True)
class Refused:
    """A keyword of the reference that `decoding` does not implement.

    Attributes:
        name: the reference's keyword.
        default: the reference's default; it, ``None`` and the ``off`` values pass.
        what: what it would turn on, in words (the error names it).
        changes_tokens: whether a value of it changes the tokens or the strategy. Only those are
            refused when the value comes from ``model.generation_config`` (a checkpoint may carry
            ``cache_implementation="hybrid"``: tokens are the same, so it is ignored there).
        off: other values that leave it off (``False`` for a switch whose default is ``None``).
        config_field: whether it is a ``GenerationConfig`` field (else an argument of ``generate``).
    """

    name: str
    default: Any
    what: str
    changes_tokens: bool
    off: tuple = ()
    config_field: bool = True

    def is_off(self, value: Any) -> bool:
        """True when ``value`` asks for nothing: None, the default, an ``off`` value or an empty container."""
        if value is None or (isinstance(value, (list, tuple, dict)) and not value):
            return True
        return any(_same(value, other) for other in (self.default, *self.off) if other is not None)


def _same(a: Any, b: Any) -> bool:
    """Equal plain values: ``True`` is not ``1``, ``1`` is ``1.0``; any other object (a tensor, ...) is never "off"."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if is_number(a) and is_number(b):
        return a == b
    return isinstance(a, str) and a == b


_UAD = "speculation with an assistant that has its own tokenizer (universal assisted generation)"
_NOT_TOKENS = "; the tokens do not depend on it"

#: The reference's keywords (``GenerationConfig`` fields and ``generate`` arguments) that `decoding`
#: refuses with ``NotImplementedError`` unless they are off; tests/test_knobs.py finds them by
#: introspecting transformers.
REFUSED: dict[str, Refused] = {r.name: r for r in (
    Refused("token_healing", None, "token healing of the prompt's last tokens", True, off=(False,)),
    Refused("use_mtp", None, "speculation with the model's multi-token-prediction heads", True, off=(False,)),
    Refused("speculation_type", None, "another kind of speculation (DFlash)", True),
    Refused("assistant_ensemble_weight", None, "lossy ensemble verification in speculative decoding", True),
    Refused("assistant_tokenizer", None, _UAD, True, config_field=False),
    Refused("assistant_lookbehind", 10, _UAD, False),
    Refused("target_lookbehind", 10, _UAD, False),
    Refused("prefill_chunk_size", None, "a prompt prefilled in chunks" + _NOT_TOKENS, False),
    Refused("continuous_batching_config", None, "continuous batching" + _NOT_TOKENS, False),
    Refused("is_assistant", None, "the behaviour of generate inside an assistant model", False, off=(False,)),
    Refused("decoder_start_token_id", None, "encoder-decoder generation (decoding runs decoder-only models)", False),
    Refused("trust_remote_code", None, "a decoding method loaded from the Hub (custom_generate='org/repo'); "
            "accepted (and needed) with a local custom_generate folder", False,
            off=(False,), config_field=False),
)}


def group_names(group: str) -> tuple[str, ...]:
    """The keywords of one group, in table order."""
    return tuple(name for name, knob in KNOBS.items() if knob.group == group)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _default_text(knob: Knob) -> str:
    if knob.companion is not None:
        return f"None (`{knob.companion!r}` when on)"
    return "None" if knob.default is None else f"`{knob.default!r}`"


def markdown_tables() -> str:
    """The keyword tables of docs/api.md, one per group, generated from :data:`KNOBS` and :data:`REFUSED`."""
    parts = []
    for group in GROUPS:
        parts.append(f"#### {group[0].upper()}{group[1:]}\n")
        if group == CALL:
            parts.append("| Keyword | Default | Meaning |\n|---|---|---|")
            parts += [f"| `{k.name}` | {_default_text(k)} | {_cell(k.help)} |"
                      for k in KNOBS.values() if k.group == group]
        else:
            parts.append("| Keyword | Default | Valid values | Meaning |\n|---|---|---|---|")
            parts += [f"| `{k.name}` | {_default_text(k)} | {_cell(k.valid_values)} | {_cell(k.help)} |"
                      for k in KNOBS.values() if k.group == group]
        parts.append("")
    parts.append("#### Refused (NotImplementedError unless off)\n")
    parts.append("| Keyword | Passes when | Would turn on | In `model.generation_config` |\n|---|---|---|---|")
    for r in REFUSED.values():
        passes = ", ".join(f"`{v!r}`" for v in dict.fromkeys((None, r.default, *r.off)))
        model = ("refused too" if r.changes_tokens else "ignored") if r.config_field else "(a `generate` argument)"
        parts.append(f"| `{r.name}` | {passes} | {_cell(r.what)} | {model} |")
    return "\n".join(parts) + "\n"



_BEGIN, _END = "<!-- knobs table: begin", "<!-- knobs table: end -->"


def write_docs(path: str = "docs/api.md") -> None:
    """Replace the text between the knobs-table markers of ``path`` by :func:`markdown_tables`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index("\n", text.index(_BEGIN)) + 1, text.index(_END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + markdown_tables() + text[end:])


__all__ = ["KNOBS", "REFUSED", "Knob", "Refused", "group_names", "markdown_tables", "write_docs"]
