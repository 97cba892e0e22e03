"""The command line: ``python -m decoding generate "PROMPT"`` and ``python -m decoding chat``.

Both run on the built-in model unless ``--model`` names a local Hugging Face folder or a hub id,
stream the answer to stdout as it is generated, and take every generation keyword of
:func:`decoding.generate` as a flag (``--max-new-tokens 40 --do-sample --temperature 0.7``). The flags
are derived from the knobs table (:data:`decoding.knobs.KNOBS`: type, help, default, flag or not), so a
keyword declared there appears here. ``--compare`` also runs ``model.generate`` and reports whether the tokens are
identical. Errors are one line on stderr and a non-zero exit status. docs/cli.md has the details.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any, Callable, Optional, Sequence

from .config import CONFIG_FIELDS
from .declarations import BEYOND, literal
from .knobs import KNOBS, REFUSED

#: Generation fields that are not flags (their knob says ``flag=False``): they change what ``generate``
#: returns (the CLI prints text; ``--compare`` reports scores) or take an object a command line cannot express.
NOT_FLAGS: tuple[str, ...] = tuple(name for name in CONFIG_FIELDS if not KNOBS[name].flag)

#: How each flag's value is parsed (the knob's ``type``); fields missing here take a Python literal.
FIELD_TYPES: dict[str, Callable[[str], Any]] = {name: KNOBS[name].type for name in CONFIG_FIELDS}

#: Fields that take several values after one flag (``--stop-strings "." "!"``).
MULTI_VALUE: dict[str, Callable[[str], Any]] = {name: KNOBS[name].type for name in CONFIG_FIELDS if KNOBS[name].multi}

EXIT_ERROR = 1
EXIT_DIFFERENT = 3  # --compare found a difference
EXIT_INTERRUPTED = 130


def _flag_spec(name: str) -> dict[str, Any]:
    """argparse keyword arguments for the generation field ``name`` (from its knob; a literal if it has none)."""
    knob = KNOBS.get(name)
    if knob is None:
        return dict(type=literal, metavar="VALUE",
                    help=f"generate(..., {name}=...) (a Python literal, e.g. 2 or [2, 7])")
    if knob.group == BEYOND:
        shown = "default: off" if knob.companion is None else f"default: {knob.companion!r} once its sampler is on"
    else:
        shown = f"reference default: {knob.default!r}"
    help_text = f"{knob.help}; {shown}".replace("%", "%%")
    if knob.multi:
        return dict(nargs="+", type=knob.type, metavar=knob.metavar or "VALUE", help=help_text)
    if knob.type is bool:
        return dict(action=argparse.BooleanOptionalAction, help=help_text)
    if knob.type is literal:
        return dict(type=literal, metavar=knob.metavar or "VALUE",
                    help=help_text + ("" if knob.metavar else " (a Python literal, e.g. 2 or [2, 7])"))
    return dict(type=knob.type, metavar=knob.metavar or knob.type.__name__.upper(), help=help_text)


def generation_flag_names(parser_options: Sequence[str] = ()) -> list[str]:
    """The generation fields that become flags: :data:`CONFIG_FIELDS` minus :data:`NOT_FLAGS` and
    minus names the CLI already uses for its own options (``seed``, ...)."""
    taken = set(parser_options)
    return [name for name in CONFIG_FIELDS if name not in NOT_FLAGS and name not in taken]


_OWN_OPTIONS = ("model", "quantization", "device", "dtype", "seed", "compare", "strategy", "verbose", "raw",
                "message", "system", "merge_system", "prompt", "command", "logprobs", "json", "show_pipeline", "trace",
                "against")

#: How many alternatives ``--json`` records per token when ``--logprobs`` does not say.
JSON_TOP = 5


def _add_common(parser: argparse.ArgumentParser) -> list[str]:
    parser.add_argument("--model", default=None, metavar="PATH_OR_ID",
                        help="a local Hugging Face folder or a hub id; default: the built-in SmolLM2-135M-Instruct")
    parser.add_argument("--quantization", choices=["4bit", "8bit"], default=None,
                        help="load through bitsandbytes: 4bit (NF4, bfloat16 compute) or 8bit (LLM.int8())")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; default: cuda if present, else cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto; default: the checkpoint's")
    parser.add_argument("--seed", type=int, default=None,
                        help="torch.manual_seed(SEED) before generating (with --compare: before each run; default 0)")
    parser.add_argument("--compare", action="store_true",
                        help="also run model.generate and report whether the tokens are identical "
                             f"(exit status {EXIT_DIFFERENT} when they differ)")
    parser.add_argument("--strategy", default=None, metavar="MODULE:FUNCTION",
                        help="decode with your own strategy(call) (docs/strategies.md): an importable module or a "
                             ".py file, then the function's name; with --compare it is checked against model.generate")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the load time and the time per new token to stderr")
    names = generation_flag_names(_OWN_OPTIONS)
    groups = {}
    for name in names:   # one help section per group of the knobs table, in its order
        group = KNOBS[name].group if name in KNOBS else "other"
        if group not in groups:
            groups[group] = parser.add_argument_group(
                f"generation keywords: {group}",
                "those of decoding.generate / model.generate; a flag left out is not passed, so the model's "
                "generation config decides" if not groups else None)
        groups[group].add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                                   **_flag_spec(name))
    # The reference's keywords decoding does not implement: accepted as (hidden) flags and passed on, so
    # that the answer is generate's NotImplementedError naming the keyword, not "unrecognized arguments".
    refused = [name for name in REFUSED if name not in names and name not in _OWN_OPTIONS]
    for name in refused:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, type=literal,
                            help=argparse.SUPPRESS)
    return names + refused


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m decoding",
        description="Generate with decoding's own loop (the same tokens as transformers' model.generate).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,chat,compare}")
    gen = commands.add_parser(
        "generate", help="answer PROMPT (one user message through the chat template), or continue raw text with --raw",
        description="Stream the model's output for PROMPT. When the tokenizer has a chat template (the built-in "
                    "model's has), PROMPT is sent as one user message through it with add_generation_prompt=True, "
                    "as an instruct model expects; --raw sends the text itself, exactly as tokenizer(PROMPT).")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--raw", action="store_true",
                     help="no chat template: the prompt is tokenizer(PROMPT) and the model continues the text "
                          "(the default when the tokenizer has no chat template)")
    gen.add_argument("--logprobs", type=_non_negative, default=None, metavar="K",
                     help="after the answer, print each new token with its probability (under the distribution it "
                          "was chosen from, and the model's raw one) and the top K alternatives")
    gen.add_argument("--json", default=None, metavar="PATH",
                     help="write the whole result as JSON to PATH ('-': stdout): prompt, ids, text, and per token its "
                          "probabilities and top alternatives (--logprobs K of them, else %d)" % JSON_TOP)
    gen.add_argument("--show-pipeline", action="store_true",
                     help="print the processors the call will apply, in order, to stderr before generating")
    gen.add_argument("--trace", default=None, metavar="REPORT.html",
                     help="trace the run (every processor stage's candidates per step) and write its visual report, "
                          "one self-contained HTML file, to REPORT.html (docs/inspecting.md)")
    gen.set_defaults(generation_names=_add_common(gen))
    chat = commands.add_parser("chat", help="chat: interactive with history, or one-shot with --message",
                               description="Chat with the model. Without --message: interactive; type /reset to "
                                           "clear the history, /exit or an end of file (Ctrl-D) to quit.")
    chat.add_argument("--message", default=None, help="answer this one user message and exit")
    chat.add_argument("--system", default=None, help="a system message (replaces a template's default one)")
    chat.add_argument("--merge-system", action="store_true",
                      help="for templates without a system role: put the system text in front of the first user message")
    chat.set_defaults(generation_names=_add_common(chat))
    comp = commands.add_parser(
        "compare", help="run two decoders on PROMPT and print where they first differ (default: ours against "
                        "model.generate)",
        description="Run model.generate (or, with --against, decoding.generate with some keywords changed) and "
                    "decoding.generate on PROMPT under the same seed, and print the first divergence as a table: "
                    "the step and row, both tokens with their scores and probabilities on both sides, the gaps, "
                    "and the first processor stage whose scores differ. Exit status 3 when the tokens differ.")
    comp.add_argument("prompt", help="the prompt text")
    comp.add_argument("--raw", action="store_true", help="no chat template (as for generate)")
    comp.add_argument("--against", nargs="+", default=None, metavar="KEY=VALUE",
                      help="compare ours with ours: the first run takes these keywords changed (e.g. temperature=1.2 "
                           "top_k=5), the second the flags as given; both are traced, so the stage is named")
    comp.add_argument("--trace", default=None, metavar="REPORT.html",
                      help="with --against: write the two runs' visual report side by side, the divergence marked")
    comp.set_defaults(generation_names=_add_common(comp))
    return parser


def parse_against(pairs: Optional[Sequence[str]]) -> Optional[dict[str, Any]]:
    """``["temperature=1.2", "top-k=5"]`` -> ``{"temperature": 1.2, "top_k": 5}`` (values are Python literals).

    Raises:
        ValueError: an item is not KEY=VALUE.
    """
    if pairs is None:
        return None
    changed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--against takes KEY=VALUE items (for example temperature=1.2), got {pair!r}.")
        changed[key.strip().replace("-", "_")] = literal(value)
    return changed


def load_strategy(spec: str) -> Callable:
    """``"package.module:function"`` or ``"path/to/file.py:function"`` -> the function.

    Raises:
        ValueError: ``spec`` is not ``MODULE:FUNCTION``, or the module has no such callable.
        ImportError / FileNotFoundError: the module cannot be imported, or the file does not exist.
    """
    import importlib
    import importlib.util
    import os

    module_name, _, function_name = spec.rpartition(":")
    if not module_name or not function_name:
        raise ValueError(f"--strategy must be MODULE:FUNCTION (for example my_decoding:greedy or "
                         f"examples/plain_greedy.py:greedy), got {spec!r}.")
    if module_name.endswith(".py") or os.sep in module_name:
        if not os.path.isfile(module_name):
            raise FileNotFoundError(f"--strategy: no file {module_name!r}.")
        loader = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(module_name))[0], module_name)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"--strategy: {module_name!r} has no function {function_name!r}.")
    return function


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _say(message: str) -> None:
    print(f"[decoding] {message}", file=sys.stderr, flush=True)


class _Session:
    """The loaded model plus the options of one command-line run."""

    def __init__(self, args: argparse.Namespace):
        from .loading import load

        self.args = args
        self.kwargs = {name: getattr(args, name) for name in args.generation_names if hasattr(args, name)}
        if args.strategy is not None:
            self.kwargs["strategy"] = load_strategy(args.strategy)
        if not args.verbose:  # transformers' "Loading weights" bar; the built-in model's own progress stays
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        loaded = load(args.model, quantization=args.quantization, device=args.device, dtype=args.dtype)
        self.loaded = loaded
        self.model, self.tokenizer = loaded
        if args.verbose:
            _say(f"loaded {loaded.source} ({args.quantization or 'not quantized'}) in {loaded.load_seconds:.2f} s")

    def run(self, input_ids: Any, attention_mask: Any, kwargs: dict[str, Any],
            chat_cache: Any = None) -> tuple[Any, bool]:
        """Generate (streaming to stdout) from ``[1, len]`` ids; returns (new ids ``[n]``, identical or True).

        ``chat_cache``: a :class:`~decoding.conversation.ChatCache` to continue (not with ``--compare``,
        which runs both libraries from scratch)."""
        import torch

        from .comparison import compare
        from .generation import generate, pipeline
        from .runner import model_device
        from .streaming import TextStreamer

        device = model_device(self.model)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if "stop_strings" in kwargs or "dry_sequence_breakers" in kwargs:   # texts need the tokenizer
            kwargs = dict(kwargs, tokenizer=self.tokenizer)
        if getattr(self.args, "show_pipeline", False):
            show_pipeline(pipeline(self.model, input_ids, attention_mask=attention_mask, **kwargs))
        wants_scores = getattr(self.args, "logprobs", None) is not None or getattr(self.args, "json", None) is not None
        if wants_scores:   # per-step scores and raw logits for --logprobs / --json
            kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
        prompt_length = input_ids.shape[1]
        self.output = None
        self.tracer = None
        if getattr(self.args, "trace", None) is not None:   # --trace: our run only (compare keeps trace= for ours)
            from .insight.trace import Tracer

            self.tracer = Tracer(tokenizer=self.tokenizer)
            kwargs = dict(kwargs, trace=self.tracer)
        if self.args.compare:
            seed = 0 if self.args.seed is None else self.args.seed
            _say("running model.generate first (not streamed), then decoding.generate (streamed) ...")
            result = compare(self.model, input_ids, rng_seed=seed, attention_mask=attention_mask, streamer=streamer,
                             **kwargs)
            print(f"compare with model.generate (seed {seed}): {result.summary()}", flush=True)
            self.output = result.ours
            return result.ours.sequences[0, prompt_length:], result.identical
        from .conversation import reuses_cache

        reuse = chat_cache is not None and reuses_cache(self.model, kwargs)
        if reuse:
            kwargs = dict(kwargs, return_dict_in_generate=True, past_key_values=chat_cache.take(input_ids))
        elif chat_cache is not None:
            chat_cache.reset()
        if self.args.seed is not None:
            torch.manual_seed(self.args.seed)
        started = time.perf_counter()
        out = generate(self.model, input_ids, attention_mask=attention_mask, streamer=streamer, **kwargs)
        elapsed = time.perf_counter() - started
        if reuse:
            chat_cache.keep(out)
        sequences = out.sequences if (wants_scores or reuse) else out
        self.output = out if wants_scores else None
        new = sequences[0, prompt_length:]
        if self.args.verbose and len(new):
            fed = chat_cache.fed if reuse else prompt_length
            _say(f"{len(new)} new tokens in {elapsed:.2f} s ({1000 * elapsed / len(new):.1f} ms/token, prefill "
                 f"of {fed} tokens included" + (f"; {chat_cache.reused} reused from the previous turn's cache)"
                                                if reuse and chat_cache.reused else ")"))
        return new, True


def show_pipeline(processors: Sequence[Any]) -> None:
    """Print the processors a call applies, one per line in order, to stderr (``--show-pipeline``)."""
    if not processors:
        _say("pipeline: no processors (the model's logits are used as they are)")
        return
    _say(f"pipeline ({len(processors)} processor(s), applied in this order):")
    for number, processor in enumerate(processors, 1):
        print(f"  {number}. {processor!r}", file=sys.stderr, flush=True)


def token_records(output: Any, tokenizer: Any, prompt_length: int, top: int) -> list[dict[str, Any]]:
    """Row 0's new tokens with their probabilities: ``[{"id", "text", "prob", "logprob", "raw_prob", "top"}]``.

    ``prob`` is the token's probability under the distribution it was chosen from (the softmax of
    the processed scores of its step), ``raw_prob`` under the model's own logits; ``top`` holds the
    ``top`` most probable tokens of that distribution, ``{"id", "text", "prob"}`` each. With beams,
    each step's scores are read from the beam the returned sequence came from (``beam_indices``).
    """
    import torch

    beam_indices = getattr(output, "beam_indices", None)
    records = []
    for step, scores in enumerate(output.scores):
        column = prompt_length + step
        if column >= output.sequences.shape[1]:
            break
        row = 0 if beam_indices is None else int(beam_indices[0, step])
        if row < 0:   # the hypothesis ended before this step
            break
        token = int(output.sequences[0, column])
        probs = torch.softmax(scores[row].float(), dim=-1)
        logits = getattr(output, "logits", None)
        raw = torch.softmax(logits[step][row].float(), dim=-1)[token].item() if logits else None
        values, ids = probs.topk(min(top, probs.shape[-1]))
        records.append({
            "id": token, "text": tokenizer.decode([token]), "prob": probs[token].item(),
            "logprob": torch.log(probs[token]).item(), "raw_prob": raw,
            "top": [{"id": int(i), "text": tokenizer.decode([int(i)]), "prob": v.item()}
                    for v, i in zip(values, ids) if v > 0]})
    return records


def logprob_lines(tokens: Sequence[dict[str, Any]]) -> list[str]:
    """The ``--logprobs`` table: one line per token, its probabilities, then its alternatives."""
    import json

    def quoted(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    width = max([len(quoted(t["text"])) for t in tokens] + [5])
    lines = [f"{'step':>4}  {'token':<{width}}  {'p':>6}  {'raw p':>6}  top alternatives"]
    for step, t in enumerate(tokens):
        raw = "" if t["raw_prob"] is None else f"{t['raw_prob']:.4f}"
        alternatives = "  ".join(f"{quoted(a['text'])} {a['prob']:.4f}" for a in t["top"])
        lines.append(f"{step:>4}  {quoted(t['text']):<{width}}  {t['prob']:.4f}  {raw:>6}  {alternatives}")
    return lines


def write_json(path: str, prompt: str, prompt_ids: list[int], output: Any, tokenizer: Any,
               tokens: list[dict[str, Any]], kwargs: dict[str, Any], identical: Optional[bool]) -> None:
    """``--json``: the whole result as one JSON object, to ``path`` (``-``: stdout)."""
    import json

    new = [t["id"] for t in tokens]
    sequences_scores = getattr(output, "sequences_scores", None)
    result = {
        "prompt": prompt, "prompt_ids": prompt_ids, "new_ids": new,
        "text": tokenizer.decode(new, skip_special_tokens=True),
        "sequences": output.sequences.tolist(),
        "sequence_score": None if sequences_scores is None else float(sequences_scores[0]),
        "total_logprob": sum(t["logprob"] for t in tokens),
        "tokens": tokens,
        "settings": {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, float, str, list, type(None)))},
        "identical_to_reference": identical,
    }
    text = json.dumps(result, ensure_ascii=False, indent=1, allow_nan=False, default=str)
    if path == "-":
        print(text, flush=True)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def _prompt(session: _Session) -> tuple[Any, Any, dict[str, Any], bool]:
    """The command's prompt as ``(ids [1, len], mask, generation kwargs, through the chat template)``."""
    from .conversation import DEFAULT_MAX_NEW_TOKENS, chat_generation_kwargs, chat_prompt

    args = session.args
    use_template = not args.raw and getattr(session.tokenizer, "chat_template", None) is not None
    if use_template:
        prompt = chat_prompt(session.tokenizer, [{"role": "user", "content": args.prompt}])
        ids, mask = prompt.input_ids, prompt.attention_mask
        kwargs = chat_generation_kwargs(session.model, session.tokenizer, **session.kwargs)
    else:
        encoded = session.tokenizer(args.prompt, return_tensors="pt")
        ids = encoded["input_ids"]
        mask = encoded.get("attention_mask")
        if mask is None:
            import torch

            mask = torch.ones_like(ids)
        kwargs = dict(session.kwargs)
        config = getattr(session.model, "generation_config", None)
        if ("max_new_tokens" not in kwargs and "max_length" not in kwargs
                and getattr(config, "max_new_tokens", None) is None and getattr(config, "max_length", None) is None):
            kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
    return ids, mask, kwargs, use_template


def _compare_command(session: _Session) -> int:
    """``compare``: two decoders on the prompt, the divergence as a table; 0 identical, 3 different."""
    from .comparison import compare
    from .runner import model_device

    args = session.args
    ids, mask, kwargs, _ = _prompt(session)
    device = model_device(session.model)
    against = parse_against(args.against)
    if args.trace is not None and against is None:
        raise ValueError("compare --trace writes the report of two traced runs, and model.generate is not traced: "
                         "add --against KEY=VALUE (ours with a change against ours).")
    seed = 0 if args.seed is None else args.seed
    if against is not None:          # both runs are ours and traced: the traces get the token texts
        kwargs = dict(kwargs, tokenizer=session.tokenizer)
    result = compare(session.model, ids.to(device), rng_seed=seed, attention_mask=mask.to(device), against=against,
                     **kwargs)
    names = ("model.generate" if against is None else "ours with " + ", ".join(f"{k}={v!r}" for k, v in against.items()),
             "decoding.generate")
    prompt_length = ids.shape[1]
    for name, out in zip(names, (result.reference, result.ours)):
        text = session.tokenizer.decode(out.sequences[0, prompt_length:], skip_special_tokens=True)
        print(f"{name}: {text!r}", flush=True)
    print(f"seed {seed}: " + result.table(), flush=True)
    if args.trace is not None:
        from .insight.report import write_report

        path = write_report(args.trace, result.reference.trace.to_dict(), result.ours.trace.to_dict(),
                            divergence=result.divergence, title=f"{names[0]} vs {names[1]}")
        _say(f"diff report written to {path}")
    return 0 if result.identical else EXIT_DIFFERENT


def _generate_command(session: _Session) -> int:
    from .conversation import decode_answer

    args = session.args
    ids, mask, kwargs, use_template = _prompt(session)
    new, identical = session.run(ids, mask, kwargs)
    if not use_template and not decode_answer(session.tokenizer, new).strip():
        _say("the model ended at once (an instruct model given raw text often does); drop --raw")
    if session.tracer is not None and session.tracer.trace is not None:
        path = session.tracer.trace.write_report(args.trace)
        _say(f"trace report written to {path} ({len(session.tracer.trace.steps)} steps)")
    if session.output is not None:
        top = args.logprobs if args.logprobs is not None else JSON_TOP
        tokens = token_records(session.output, session.tokenizer, ids.shape[1], top)
        if args.logprobs is not None:
            print("\n".join(logprob_lines(tokens)), flush=True)
        if args.json is not None:
            write_json(args.json, args.prompt, ids[0].tolist(), session.output, session.tokenizer, tokens,
                       session.kwargs, identical if args.compare else None)
    return 0 if identical else EXIT_DIFFERENT


def _chat_turn(session: _Session, messages: list[dict], chat_cache: Any = None) -> tuple[str, bool]:
    from .conversation import chat_generation_kwargs, chat_prompt, decode_answer

    prompt = chat_prompt(session.tokenizer, messages, merge_system=session.args.merge_system)
    kwargs = chat_generation_kwargs(session.model, session.tokenizer, **session.kwargs)
    new, identical = session.run(prompt.input_ids, prompt.attention_mask, kwargs, chat_cache)
    return decode_answer(session.tokenizer, new), identical


def _chat_command(session: _Session) -> int:
    args = session.args
    start = [{"role": "system", "content": args.system}] if args.system else []
    if args.message is not None:
        _, identical = _chat_turn(session, start + [{"role": "user", "content": args.message}])
        return 0 if identical else EXIT_DIFFERENT
    from .conversation import ChatCache

    messages = list(start)
    chat_cache = ChatCache()   # each turn continues the previous turn's key/value cache
    all_identical = True
    _say(f"chatting with {session.loaded.source}; /reset clears the history, /exit or Ctrl-D quits")
    while True:
        print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            print(file=sys.stderr)
            break
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(start)
            chat_cache.reset()
            _say("history cleared")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        answer, identical = _chat_turn(session, messages, chat_cache)
        all_identical = all_identical and identical
        messages.append({"role": "assistant", "content": answer})
    return 0 if all_identical else EXIT_DIFFERENT


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 3 --compare found a difference)."""
    args = build_parser().parse_args(argv)
    session = None
    try:
        session = _Session(args)
        commands = {"generate": _generate_command, "chat": _chat_command, "compare": _compare_command}
        return commands[args.command](session)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # one clear line, no traceback (set DECODING_TRACEBACK=1 for one)
        import os

        if os.environ.get("DECODING_TRACEBACK"):
            raise
        print(f"decoding: error: {_one_line(error)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    finally:
        if session is not None:
            session.loaded.close()
