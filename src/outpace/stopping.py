"""Incremental detokenization with stop strings: what text is safe to stream so far."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextStream:
    """Turns a growing list of token ids into text deltas.

    With no tokenizer (token-level use) the text stays empty. Holds back text that may change: a trailing incomplete UTF-8 sequence, and a suffix
    that could be the start of a stop string. After `push`, `stopped` says whether a stop
    string appeared; the text is then cut just before it.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.tokens: list[int] = []
        self.text = ""  # final text so far (after a stop: the whole answer)
        self._sent = 0
        self.stopped = False
        # Incremental detokenization (the window scheme of vLLM's detokenizer): decode only
        # tokens[_prefix:], and take the text past what tokens[_prefix:_read] gave. The prefix
        # tokens supply context (leading spaces, merges), so the pieces add up to the full
        # decode, and each push costs O(new tokens) instead of O(all tokens).
        self._prefix = 0
        self._read = 0

    def push(self, tokens: Sequence[int]) -> str:
        """Add tokens and return the new text that is safe to emit."""
        self.tokens.extend(tokens)
        if self.tokenizer is None or self.stopped:
            return ""
        text = self.text + self._decode_new(final=False)
        cut = self._first_stop(text)
        if cut is not None:
            self.stopped = True
            self.text = text[:cut]
            return self._emit(len(self.text))
        self.text = text
        return self._emit(len(text) - self._stop_prefix_len(text))

    def flush(self) -> str:
        """Everything not yet emitted (call at the end of generation)."""
        if self.tokenizer is not None and not self.stopped:
            self.text += self._decode_new(final=True)
            cut = self._first_stop(self.text)
            if cut is not None:
                self.stopped = True
                self.text = self.text[:cut]
        return self._emit(len(self.text))

    def _decode_new(self, final: bool) -> str:
        """Text of the tokens not decoded yet; "" while it ends inside a UTF-8 sequence."""
        decode = self.tokenizer.decode
        before = decode(self.tokens[self._prefix : self._read], skip_special_tokens=True)
        now = decode(self.tokens[self._prefix :], skip_special_tokens=True)
        if len(now) <= len(before) or (now.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        return now[len(before) :]

    def _emit(self, upto: int) -> str:
        upto = max(upto, self._sent)
        out, self._sent = self.text[self._sent : upto], upto
        return out

    def _first_stop(self, text: str) -> int | None:
        # Only the tail can hold a new stop string; search from just before the sent text.
        start = max(0, self._sent - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
