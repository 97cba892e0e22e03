"""Streamers: receive tokens as the loop produces them.

The protocol is the reference's (``put(value)``, ``end()``), with its call pattern:

- the first ``put`` gets the (expanded) prompt, a ``[rows, prompt_len]`` CPU int64 tensor;
- then one ``put`` per step with the new tokens, a 1-D ``[rows]`` CPU int64 tensor (finished rows
  send ``pad_token_id``);
- ``end()`` once at the end.

So ``transformers.TextStreamer`` works with our loop unchanged, and our streamers work with
``model.generate``.
"""

from __future__ import annotations

import sys
from queue import Queue
from typing import Any, Optional, TextIO

import torch


class BaseStreamer:
    """Base class: override ``put`` and ``end``."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


def _stable_prefix_length(text: str) -> int:
    """How much of ``text`` can be shown now without risk of taking it back later.

    A trailing U+FFFD is an incomplete multi-byte character whose remaining bytes are in the next
    token; trailing white space may be merged or cleaned up by the next token (" ," -> ","). Both
    are held back until more text arrives.
    """
    end = len(text)
    while end > 0 and (text[end - 1] == "\ufffd" or text[end - 1].isspace()):
        end -= 1
    return end


class TextStreamer(BaseStreamer):
    """Print text as it arrives (batch size 1).

    Differences from ``transformers.TextStreamer``: text is printed token by token rather than word
    by word; a character whose UTF-8 bytes are split across tokens is printed once it is complete,
    never as a replacement character; the output goes to ``file`` (default: ``sys.stdout``).

    Args:
        tokenizer: anything with ``decode(list[int], **kwargs) -> str``.
        skip_prompt: do not print the prompt (the first ``put``).
        file: a text stream to write to.
        **decode_kwargs: passed to ``tokenizer.decode`` (e.g. ``skip_special_tokens=True``).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, file: Optional[TextIO] = None,
                 **decode_kwargs: Any):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.file = file
        self.decode_kwargs = decode_kwargs
        self._tokens: list[int] = []
        self._printed = 0
        self._next_is_prompt = True

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError(
                f"TextStreamer streams one sequence, but got a batch of {value.shape[0]} rows; use "
                "batch size 1 (and num_return_sequences=1) or a streamer that handles rows.")
        if self._next_is_prompt:
            self._next_is_prompt = False
            if self.skip_prompt:
                return
        self._tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self._tokens, **self.decode_kwargs)
        stable = _stable_prefix_length(text)
        if stable > self._printed:
            self.on_text(text[self._printed:stable])
            self._printed = stable
        if stable == len(text) and "\n" in text:  # all shown: start afresh so decoding stays cheap
            self._tokens, self._printed = [], 0

    def end(self) -> None:
        text = self.tokenizer.decode(self._tokens, **self.decode_kwargs) if self._tokens else ""
        self.on_text(text[self._printed:], stream_end=True)
        self._tokens, self._printed = [], 0
        self._next_is_prompt = True

    def on_text(self, text: str, stream_end: bool = False) -> None:
        """Called with each new piece of text; override to send it elsewhere."""
        out = self.file if self.file is not None else sys.stdout
        out.write(text + ("\n" if stream_end else ""))
        out.flush()


class TextIteratorStreamer(TextStreamer):
    """Hand text to another thread: run ``generate`` in a thread, iterate this object in yours.

    ``timeout`` (seconds) bounds each wait for the next piece; it raises ``queue.Empty`` when it
    runs out. Iteration stops when generation ends. If generation fails (bad input, a fault,
    Ctrl-C in the producer), ``decoding.generate`` calls :meth:`on_error` and the next ``next()``
    in the consumer raises that error, so the consumer never waits for text that will not come.

    Example::

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        Thread(target=decoding.generate, args=(model, ids), kwargs={"streamer": streamer}).start()
        for piece in streamer:
            print(piece, end="")
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None,
                 **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def on_error(self, error: BaseException) -> None:
        """Called by ``decoding.generate`` (in the producer) when generation fails: the consumer re-raises ``error``."""
        self.text_queue.put(_Failed(error), timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        if isinstance(value, _Failed):
            raise value.error
        return value


class _Failed:
    """The producer's error, queued for the consumer of a :class:`TextIteratorStreamer`."""

    def __init__(self, error: BaseException):
        self.error = error


def notify_failure(streamer: Any, error: BaseException) -> None:
    """Tell a streamer with ``on_error(error)`` that generation failed (other streamers are left alone)."""
    handler = getattr(streamer, "on_error", None)
    if callable(handler):
        handler(error)
