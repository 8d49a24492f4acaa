"""A KV cache kept together with the tokens it holds, so that what is cached is never recomputed.

Within a generation this is how a draft model catches up after verification: keep the longest
prefix it shares with the committed tokens, roll back the rest, feed what is new. Across
generations it lets a prompt that extends an earlier one (the next turn of a chat, whose prompt
contains the previous answer, or a repeated request) skip the prefill of what is already
cached, as llama-cpp-python and llama.cpp's server do. The reused keys and values are the
model's own for the same tokens at the same positions, so reuse changes no distribution (in low
precision a batched forward may round differently from single-token ones, as it may anywhere in
speculative decoding).

Several decoders may share one backend (the server's speculative and plain decoders, the
bench's methods) and its memory: a llama.cpp context has one KV store for all sequences, and
every cached cell, whosever it is, lengthens the attention of every forward. So a cache kept
between generations is *parked*, and at most one is parked per backend: the next `hold` by
another owner on that backend frees it. Consecutive turns through one decoder reuse their
cache; interleaved decoders each pay their own prefill.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from outpace.backends.base import Backend


class HeldCache:
    """A backend's KV cache and the tokens it holds.

    Invariant: the cache's first len(tokens) entries hold `tokens`. The cache may hold more
    (a caller that forwards into `cache` itself records what it kept with `extended`); the
    next `hold` drops whatever `tokens` does not account for.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cache: Any = None
        self.tokens: list[int] = []
        self.reused = 0  # tokens the last hold() found cached

    def hold(self, tokens: Sequence[int], *, known: int = 0, min_new: int = 0) -> torch.Tensor | None:
        """Make the cache hold exactly `tokens`, forwarding only what it lacks.

        known: tokens[:known] are known to equal self.tokens[:known] (skips the comparison).
        min_new: forward at least this many of the last tokens, even if cached (to get logits).
        Returns the logits after the last forwarded token, [vocab], or None if none was.
        """
        keep = _common_prefix(self.tokens, tokens, known, limit=len(tokens) - min_new)
        if self.cache is not None and keep < self.backend.cache_len(self.cache):
            if self.backend.capabilities.rollback:
                self.backend.rollback(self.cache, keep)
            else:  # without rollback only a pure extension of the cache is reusable
                self.cache = None
        if self.cache is None:
            self.cache, keep = self.backend.new_cache(), 0
        del self.tokens[keep:]
        self.reused = keep
        _unpark(self.backend, keep=self)  # in use now; another owner's parked cache gives way
        return self.extend(tokens[keep:]) if keep < len(tokens) else None

    def extend(self, tokens: Sequence[int]) -> torch.Tensor:
        """Forward `tokens` (at least one) after the cache; the logits after the last: [vocab]."""
        logits = self.backend.forward(self.cache, torch.tensor(list(tokens)), last_only=True).logits[-1]
        self.tokens.extend(tokens)
        return logits

    def extended(self, continuation: Sequence[int]) -> None:
        """Record a forward the caller ran on `cache` itself: the cache grew by a prefix of
        `continuation` (the tokens after self.tokens, in order)."""
        grown = self.backend.cache_len(self.cache) - len(self.tokens)
        if grown > len(continuation):
            raise ValueError(f"the cache grew by {grown} tokens; only {len(continuation)} were given")
        self.tokens.extend(continuation[:grown])

    def park(self) -> None:
        """Keep the cache for this owner's next generation, until another owner on the same
        backend needs the memory (see the module docstring)."""
        if self.cache is not None:
            _unpark(self.backend, keep=self)
            _parked[self.backend] = weakref.ref(self)

    def drop(self) -> None:
        """Free the cache (after an error left its contents unknown, or to make room)."""
        self.cache, self.tokens = None, []


# backend -> its parked cache; weak both ways, so neither outlives its owner
_parked: weakref.WeakKeyDictionary[Any, weakref.ref[HeldCache]] = weakref.WeakKeyDictionary()


def _unpark(backend: Any, keep: HeldCache) -> None:
    """Take the cache parked on `backend` off the shelf; free it unless it is `keep`."""
    ref = _parked.pop(backend, None)
    parked = ref() if ref is not None else None
    if parked is not None and parked is not keep:
        parked.drop()


def _common_prefix(a: Sequence[int], b: Sequence[int], start: int, limit: int) -> int:
    """Length of the common prefix of a and b, capped at limit; a[:start] == b[:start] is known."""
    n = max(0, min(len(a), len(b), limit))
    for i in range(min(start, n), n):
        if a[i] != b[i]:
            return i
    return n
