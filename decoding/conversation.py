"""Chat: messages in, the assistant's answer out (streamed), for any model with a chat template.

    answer = decoding.chat(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}])

The steps, each a small public function:

1. :func:`chat_prompt` renders the messages with the tokenizer's chat template
   (``add_generation_prompt=True`` appends the header that opens the assistant's turn) and tokenizes
   the text without adding special tokens again (the template writes them);
2. :func:`chat_generation_kwargs` fills in what a chat needs and ``generate``'s defaults lack: every
   end-of-turn id (:func:`end_of_turn_ids`), the pad id, and a length budget;
3. :func:`decoding.generate` runs, streaming into ``streamer``; the new tokens are decoded without
   special tokens and returned.

Across turns, a :class:`ChatCache` (``chat(..., chat_cache=ChatCache())``) keeps the key/value cache
of the previous turn: the next turn's prompt starts with the previous prompt and answer, so only the
tokens after the longest shared prefix are fed (``past_key_values``, :mod:`decoding.caches`); the
tokens are those of recomputing from scratch.

Families differ; what this module does about it (docs/chat.md shows examples):

- a template that rejects a system role (Gemma's raises "System role not supported") gives a
  :class:`ChatTemplateError` saying so, or, with ``merge_system=True``, the system text is put in
  front of the first user message and the template is tried again;
- some templates add a default system prompt when the first message is not a system one
  (SmolLM2's adds "You are a helpful AI assistant named SmolLM, trained by Hugging Face"); that is
  the template's behaviour and is kept: pass your own system message to replace it;
- the token that ends an assistant turn is not always the tokenizer's EOS (``<end_of_turn>``,
  ``<|eot_id|>``, ``<|im_end|>``, ``<|end|>``): the ids are read from the generation config, the
  tokenizer's EOS and the known end-of-turn tokens present in the vocabulary, and all of them stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from .errors import ChatTemplateError  # noqa: F401 (raised here, importable from here)
from .generation import generate
from .versions import CACHE_KEYWORD

#: New tokens a chat answer may take when no length is set anywhere (``generate``'s default of 20
#: new tokens, the reference's, would cut most answers short).
DEFAULT_MAX_NEW_TOKENS = 256

#: Tokens that end an assistant turn in common chat families (used when present in the vocabulary).
END_OF_TURN_TOKENS: tuple[str, ...] = (
    "<|im_end|>",             # ChatML: Qwen, SmolLM, Hermes, ...
    "<end_of_turn>",          # Gemma
    "<|eot_id|>",             # Llama 3
    "<|eom_id|>",             # Llama 3.1 (end of a tool-calling message)
    "<|end|>",                # Phi-3
    "<|END_OF_TURN_TOKEN|>",  # Command-R
)

Messages = Union[str, Sequence[dict]]


@dataclass
class ChatPrompt:
    """A rendered and tokenized conversation.

    Attributes:
        text: the template's output (special tokens written out as text).
        input_ids: ``[1, prompt_len]`` int64.
        attention_mask: ``[1, prompt_len]`` int64 (all ones).
        messages: the messages actually rendered (after a system merge, if one was made).
    """

    text: str
    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    messages: list[dict]


def normalize_messages(messages: Messages) -> list[dict]:
    """A list of ``{"role": str, "content": ...}`` dicts; a plain string becomes one user message.

    Raises:
        ChatTemplateError: not a string or a non-empty list of such dicts (the message names the index).
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatTemplateError(
            f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts (or one string), got "
            f"{messages!r:.80}.")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise ChatTemplateError(
                f"messages[{index}] must be a dict with a string 'role' and a 'content', got {message!r:.80}.")
        out.append(dict(message))
    return out


def merge_system_message(messages: Sequence[dict]) -> list[dict]:
    """Put the text of leading system messages in front of the first user message (``"SYSTEM\\n\\nUSER"``).

    For templates without a system role (Gemma's). Messages without a system message come back unchanged.
    """
    messages = [dict(m) for m in messages]
    system = [m for m in messages if m["role"] == "system"]
    if not system:
        return messages
    rest = [m for m in messages if m["role"] != "system"]
    text = "\n\n".join(str(m["content"]) for m in system)
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{text}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": text}] + rest


def chat_prompt(tokenizer: Any, messages: Messages, add_generation_prompt: bool = True,
                merge_system: bool = False, **template_kwargs: Any) -> ChatPrompt:
    """Render ``messages`` with the tokenizer's chat template and tokenize the text.

    ``add_generation_prompt=True`` appends the header that opens the assistant's turn (for SmolLM2,
    ``"<|im_start|>assistant\\n"``), so the model writes an answer; without it the prompt ends after
    the last message and the model may continue that message or open any turn itself.
    ``template_kwargs`` go to ``apply_chat_template`` (``tools=``, ``documents=``, ``chat_template=``,
    ``continue_final_message=``, template variables).

    Raises:
        ChatTemplateError: no chat template, malformed messages, or the template refused them (a
            system role it rejects: the message says to pass ``merge_system=True``).
    """
    messages = normalize_messages(messages)
    if getattr(tokenizer, "chat_template", None) is None and "chat_template" not in template_kwargs:
        raise ChatTemplateError(
            f"the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '?')!r}) has no chat "
            "template; set tokenizer.chat_template = '...jinja...' (or pass chat_template=), or use decoding.generate "
            "on tokenizer(text) for plain text completion.")
    import jinja2

    def render(msgs: list[dict]) -> str:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False,
                                             **template_kwargs)

    try:
        text = render(messages)
    except jinja2.TemplateError as error:
        has_system = any(m["role"] == "system" for m in messages)
        if has_system and merge_system:
            messages = merge_system_message(messages)
            try:
                text = render(messages)
            except jinja2.TemplateError as again:
                raise ChatTemplateError(f"the chat template refused the messages even with the system message "
                                        f"merged into the first user message: {again}") from again
        elif has_system:
            raise ChatTemplateError(
                f"the chat template refused the messages ({error}); it probably has no system role (Gemma's has "
                "none). Pass merge_system=True (CLI: --merge-system) to put the system text in front of the first "
                "user message, or drop the system message.") from error
        else:
            raise ChatTemplateError(f"the chat template refused the messages: {error} (roles: "
                                    f"{[m['role'] for m in messages]}).") from error
    encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    ids = encoded["input_ids"].long()
    mask = encoded["attention_mask"].long() if "attention_mask" in encoded else torch.ones_like(ids)
    return ChatPrompt(text, ids, mask, messages)


class ChatCache:
    """The key/value cache of a conversation, kept from one turn to the next.

    After a turn it holds the turn's whole sequence (prompt and answer) and the cache the model
    filled (every position but the last token's, which was never fed). The next turn's prompt is
    compared with that sequence: the cache is cropped to their longest shared prefix (the template may
    render the answer back in other tokens, or a history may be edited) and continued from there, so
    the prefill feeds only the rest. Nothing shared (or a cache that cannot be cropped there, such as
    a sliding-window layer past its window): the turn runs from scratch.

    Only plain greedy search and sampling (one sequence, no speculation, the default cache) keep a
    cache; any other call runs from scratch and leaves the chat cache empty.

    Attributes:
        sequence: ``[n]`` int64, the last turn's prompt and answer (None before the first turn).
        cache: the ``transformers`` cache holding ``sequence[:-1]`` (None before the first turn).
        reused: positions the latest turn took from the cache (0: it ran from scratch).
        fed: prompt tokens the latest turn fed to the model.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the cache (``/reset`` in the CLI's chat): the next turn runs from scratch."""
        self.sequence: Optional[torch.LongTensor] = None
        self.cache: Any = None
        self.reused = 0
        self.fed = 0

    def take(self, input_ids: torch.LongTensor) -> Any:
        """The cache to continue for a prompt ``input_ids`` (``[1, length]``), cropped to the prefix it
        shares with the previous turn's sequence; None (and the chat cache emptied) when there is none."""
        cache, sequence = self.cache, self.sequence
        self.reset()
        length = input_ids.shape[1]
        self.fed = length
        if cache is None or input_ids.shape[0] != 1:
            return None
        previous, prompt = sequence.tolist(), input_ids[0].tolist()
        shared = 0
        for a, b in zip(previous, prompt):
            if a != b:
                break
            shared += 1
        held = cache.get_seq_length()
        keep = min(shared, held, length - 1)       # at least one prompt token is fed (it gives the logits)
        if keep <= 0:
            return None
        try:
            if held > keep:
                cache.crop(keep - held)
        except (ValueError, RuntimeError):          # a layer that cannot go back there: from scratch
            return None
        self.reused, self.fed = keep, length - keep
        return cache

    def keep(self, output: Any) -> None:
        """Remember a turn's output (``return_dict_in_generate=True``: ``sequences`` ``[1, n]`` and its cache)."""
        self.sequence = output.sequences[0].detach().cpu()
        self.cache = getattr(output, CACHE_KEYWORD)       # the installed release's name (versions.py)


def reuses_cache(model: Any, generation_kwargs: dict[str, Any]) -> bool:
    """Whether a chat turn with these keyword arguments can continue a :class:`ChatCache`: greedy search or
    sampling of one sequence, without speculation, a custom strategy or another cache."""
    from .caches import normalized
    from .config import CONFIG_FIELDS, resolve_settings

    kwargs = generation_kwargs
    if any(kwargs.get(name) is not None for name in ("assistant_model", "strategy", "custom_generate",
                                                     "past_key_values", "cache")):
        return False
    settings = resolve_settings(model, kwargs.get("generation_config"),
                                {k: v for k, v in kwargs.items() if k in CONFIG_FIELDS})
    return bool(settings.use_cache and settings.num_beams == 1 and settings.num_return_sequences == 1
                and not settings.prompt_lookup_num_tokens and not settings.assistant_early_exit
                and normalized(settings.cache_implementation) is None)


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def end_of_turn_ids(tokenizer: Any, model: Any = None, generation_config: Any = None) -> list[int]:
    """Every id that ends an assistant turn, first the generation config's EOS ids (in their order).

    Read from (in this order, without duplicates): ``generation_config`` (else the model's) ``eos_token_id``,
    the tokenizer's ``eos_token_id``, and the :data:`END_OF_TURN_TOKENS` found in the vocabulary as
    whole tokens.
    """
    config = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    found: list[int] = []
    for token_id in _ids(getattr(config, "eos_token_id", None)) + _ids(getattr(tokenizer, "eos_token_id", None)):
        if token_id not in found:
            found.append(token_id)
    unk = getattr(tokenizer, "unk_token_id", None)
    for token in END_OF_TURN_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if (isinstance(token_id, int) and token_id != unk and token_id not in found
                and tokenizer.convert_ids_to_tokens(token_id) == token):
            found.append(token_id)
    return found


def chat_generation_kwargs(model: Any, tokenizer: Any, **generation_kwargs: Any) -> dict[str, Any]:
    """``generation_kwargs`` plus what a chat needs and the user did not set.

    - ``eos_token_id``: :func:`end_of_turn_ids` (when it finds any);
    - ``pad_token_id``: the tokenizer's, when the model's generation config has none;
    - ``max_new_tokens``: :data:`DEFAULT_MAX_NEW_TOKENS` when no length is set in the call or in the
      model's generation config.
    """
    kwargs = dict(generation_kwargs)
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    if "eos_token_id" not in kwargs:
        eos = end_of_turn_ids(tokenizer, model, config)
        if eos:
            kwargs["eos_token_id"] = eos
    if "pad_token_id" not in kwargs and getattr(config, "pad_token_id", None) is None:
        if getattr(tokenizer, "pad_token_id", None) is not None:
            kwargs["pad_token_id"] = tokenizer.pad_token_id
    if ("max_new_tokens" not in kwargs and "max_length" not in kwargs
            and getattr(config, "max_new_tokens", None) is None and getattr(config, "max_length", None) is None):
        kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
    return kwargs


def chat(model: Any, tokenizer: Any, messages: Messages, *, streamer: Any = None, add_generation_prompt: bool = True,
         merge_system: bool = False, template_kwargs: Optional[dict] = None, chat_cache: Optional[ChatCache] = None,
         **generation_kwargs: Any) -> str:
    """Answer a conversation: render it, generate (streaming), return the new text without the prompt.

    Args:
        model: a causal LM in ``.eval()`` mode (plain, quantized or dispatched).
        tokenizer: its tokenizer, with a chat template.
        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]`` or one string
            (a single user message). Keep the history by appending
            ``{"role": "assistant", "content": answer}`` and the next user message.
        streamer: gets the prompt first, then each new token (build it with ``skip_prompt=True``, e.g.
            ``decoding.TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)``).
        add_generation_prompt: append the assistant header (see :func:`chat_prompt`).
        merge_system: for templates without a system role, merge it into the first user message.
        template_kwargs: passed to ``apply_chat_template`` (``tools=``, ``continue_final_message=``, ...).
        chat_cache: a :class:`ChatCache` to continue and update: pass the same one every turn of a
            conversation, and only the tokens after what the previous turn left in it are computed.
        **generation_kwargs: keyword arguments of :func:`decoding.generate` (``max_new_tokens``,
            ``do_sample``, ``temperature``, ...), completed by :func:`chat_generation_kwargs`.

    Returns:
        The answer: the new tokens decoded with ``skip_special_tokens=True`` (the end-of-turn token
        is not part of it).

    Raises:
        ChatTemplateError: see :func:`chat_prompt`; plus whatever :func:`decoding.generate` raises.
    """
    prompt = chat_prompt(tokenizer, messages, add_generation_prompt, merge_system, **(template_kwargs or {}))
    kwargs = chat_generation_kwargs(model, tokenizer, **generation_kwargs)
    device = _input_device(model)
    reuse = chat_cache is not None and reuses_cache(model, kwargs)
    if reuse:
        kwargs.update(return_dict_in_generate=True, past_key_values=chat_cache.take(prompt.input_ids))
    elif chat_cache is not None:
        chat_cache.reset()
    output = generate(model, prompt.input_ids.to(device), attention_mask=prompt.attention_mask.to(device),
                      streamer=streamer, **kwargs)
    if reuse:
        chat_cache.keep(output)
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    return decode_answer(tokenizer, sequences[0, prompt.input_ids.shape[1]:])


def decode_answer(tokenizer: Any, new_ids: Iterable[int]) -> str:
    """The text of generated ids without special tokens (end-of-turn, padding)."""
    ids = new_ids.tolist() if isinstance(new_ids, torch.Tensor) else list(new_ids)
    return tokenizer.decode(ids, skip_special_tokens=True)


def _input_device(model: Any) -> torch.device:
    from .runner import model_device

    return model_device(model)
