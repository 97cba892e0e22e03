"""Stop strings: end a row once its text contains one of the given strings.

The rule is the reference's (``stop_strings=`` with ``tokenizer=``): a row is done at the step where
a stop string occurs in the text of its tokens *and that occurrence overlaps the last token*. The
last token may overhang the string on either side (``"las" + "topper"`` contains ``"stop"``), and
earlier tokens, prompt included, may supply its beginning. An occurrence that lies wholly before
the last token does not count (it would have stopped the row earlier).

How: each token id gets its *surface*, the exact text it adds when decoded after other tokens
(computed once per tokenizer). Byte-level vocabularies (GPT-2 style) and byte-fallback vocabularies
(``<0xNN>`` tokens) are matched on UTF-8 bytes, so a stop string split inside a multi-byte
character is still found. Each step then joins the surfaces of the last few tokens of each row
and searches for the stop strings near the end: plain string search, no tensor tricks.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence, Union

import torch

from .criteria import StoppingCriteria

Surface = Union[str, bytes]


@functools.lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-level alphabet, inverted: printable character -> the byte it stands for.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 bytes are
    shifted to code points 256, 257, ... in byte order.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


def _decoder_kind(tokenizer: Any) -> str:
    """'byte_level', 'byte_fallback' or 'text': how the tokenizer's decoder turns tokens into text."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return "text"
    if type(decoder).__name__ == "ByteLevel":
        return "byte_level"
    try:
        state = json.dumps(json.loads(decoder.__getstate__()))
    except (AttributeError, TypeError, ValueError):
        return "text"
    if '"ByteFallback"' in state:
        return "byte_fallback"
    if '"ByteLevel"' in state:
        return "byte_level"
    return "text"


def token_surfaces(tokenizer: Any, prefix: str = "abcdef") -> tuple[str, dict[int, Surface]]:
    """``(kind, {token id: surface})`` for every token of ``tokenizer``'s vocabulary.

    Tokens the decoder maps byte by byte get their bytes. Others are decoded after a fixed prefix
    and the prefix is cut off again, so that tokenizers which add or drop a leading space at the
    start of a text still give each token the text it adds in the middle of one.
    """
    kind = _decoder_kind(tokenizer)
    alphabet = _byte_level_alphabet() if kind == "byte_level" else {}
    prefix_tokens = tokenizer.convert_ids_to_tokens(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    surfaces: dict[int, Surface] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if kind == "byte_level" and all(ch in alphabet for ch in token):
            surfaces[token_id] = bytes(alphabet[ch] for ch in token)
            continue
        if kind == "byte_fallback" and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                surfaces[token_id] = bytes([int(token[3:5], 16)])
                continue
            except ValueError:
                pass
        text = tokenizer.convert_tokens_to_string(prefix_tokens + [token])
        text = text[text.index(prefix) + len(prefix):] if prefix in text else text
        surfaces[token_id] = text.encode("utf-8") if kind != "text" else text
    return kind, surfaces


class StopStringCriteria(StoppingCriteria):
    """Done where the text ends with (an occurrence overlapping the last token of) a stop string.

    Args:
        tokenizer: the model's tokenizer (a ``transformers`` tokenizer).
        stop_strings: a string or a list of strings.
    """

    def __init__(self, tokenizer: Any, stop_strings: Union[str, Sequence[str]]):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        stop_strings = list(stop_strings)
        if not stop_strings or not all(isinstance(s, str) and s for s in stop_strings):
            raise ValueError(f"stop_strings must be a non-empty string or list of non-empty strings, got {stop_strings!r}.")
        self.stop_strings = stop_strings
        self.kind, self.surfaces = token_surfaces(tokenizer)
        self._empty: Surface = b"" if self.kind != "text" else ""
        self._targets = [s.encode("utf-8") if self.kind != "text" else s for s in stop_strings]
        # Like the reference, look back at most as many tokens as the longest stop string has
        # characters (every token adds at least one character, so that is always enough).
        self.lookback = max(len(s) for s in stop_strings)

    def _row_done(self, ids: list[int]) -> bool:
        pieces = [self.surfaces.get(i, self._empty) for i in ids]
        text = self._empty.join(pieces)
        last_start = len(text) - len(pieces[-1])
        for target in self._targets:
            # an occurrence overlapping the last token starts after last_start - len(target)
            if text.find(target, max(0, last_start - len(target) + 1)) != -1:
                return True
        return False

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        rows = input_ids[:, -self.lookback:].tolist()
        return torch.tensor([self._row_done(r) for r in rows], dtype=torch.bool, device=input_ids.device)
