"""Incremental n-gram indexing of the committed context, shared by the model-free drafters.

Prompt lookup decoding (Saxena, 2023), REST's and RASD's retrieval over the prompt, and any
drafter that looks up "where did the current suffix occur before" use one `ContextIndex`: every
n-gram (1 <= n <= max_n) of the sequence maps to the positions that followed its occurrences.
Committed tokens only ever grow during a generation, so each step indexes only the tokens
committed since the last one (O(new tokens * max_n)); a lookup touches only the occurrences of
one n-gram, never the whole context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from outpace.drafters.base import deep_size
from outpace.errors import OutpaceError
from outpace.tree import depths

#: A lookup scans at most this many of the most recent occurrences of an n-gram (a context of one
#: repeated token would otherwise make every lookup linear in its length).
MAX_SCAN = 256


class ContextIndex:
    """Every n-gram (1 <= n <= max_n) of a growing token sequence -> the positions after it.

    `sync(tokens)` appends what is new; it rebuilds only when `tokens` does not extend what the
    index holds (a new sequence). Positions are continuation starts: for an occurrence of the
    n-gram at tokens[s : s + n], the position s + n.
    """

    def __init__(self, max_n: int) -> None:
        if max_n < 1:
            raise OutpaceError(f"an n-gram index needs max_n >= 1, got {max_n}")
        self.max_n = max_n
        self.reset()

    def reset(self, tokens: Sequence[int] = ()) -> None:
        self._toks: list[int] = []
        self._buf = np.empty(max(64, 2 * len(tokens)), dtype=np.int64)  # [capacity]
        self._after: dict[tuple[int, ...], list[int]] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self._toks)

    def nbytes(self) -> int:
        """Approximate memory of the index (grows with the indexed context, as it must)."""
        return deep_size(self._toks, self._buf, self._after)

    @property
    def array(self) -> np.ndarray:
        """The indexed tokens: [len] int64 (a view; do not modify)."""
        return self._buf[: len(self._toks)]

    def sync(self, tokens: Sequence[int]) -> None:
        """Make the index hold `tokens`: append the new tail, or rebuild for another sequence."""
        n = len(self._toks)
        if len(tokens) < n or (n and tokens[n - 1] != self._toks[-1]):
            self.reset(tokens)
        elif len(tokens) > n:
            self.extend(tokens[n:])

    def extend(self, new: Sequence[int]) -> None:
        """Append tokens and index the n-grams that end at each of them."""
        toks = self._toks
        need = len(toks) + len(new)
        if need > self._buf.shape[0]:
            grown = np.empty(max(need, 2 * self._buf.shape[0]), dtype=np.int64)
            grown[: len(toks)] = self._buf[: len(toks)]
            self._buf = grown
        self._buf[len(toks) : need] = np.asarray(new, dtype=np.int64)
        for t in new:
            toks.append(int(t))
            end = len(toks)
            for n in range(1, min(self.max_n, end) + 1):
                self._after.setdefault(tuple(toks[end - n :]), []).append(end)

    def tail(self, n: int) -> tuple[int, ...]:
        return tuple(self._toks[-n:]) if n > 0 else ()

    def earlier(self, n: int, scan: int = MAX_SCAN) -> list[int]:
        """Continuation starts of earlier occurrences of the trailing n-gram, most recent first
        (the trailing occurrence itself, which has no continuation yet, excluded)."""
        if n < 1 or n > self.max_n or n >= len(self._toks):
            return []
        found = self._after.get(self.tail(n), [])
        end = len(self._toks)
        out = [p for p in found[-(scan + 1) :] if p < end]
        return out[::-1]

    def lookup(self, max_n: int, min_n: int, length: int, limit: int) -> tuple[int, list[list[int]]]:
        """Prompt lookup: up to `limit` distinct continuations (at most `length` tokens each) of
        earlier occurrences of the trailing n-gram, most recent first, trying the longest n first
        and stopping at the first n that has any. Returns (that n, or 0 if none; continuations)."""
        toks = self._toks
        for n in range(min(max_n, len(toks) - 1), min_n - 1, -1):
            found: list[list[int]] = []
            for p in self.earlier(n):
                cont = toks[p : p + length]
                if cont and cont not in found:
                    found.append(cont)
                    if len(found) == limit:
                        break
            if found:
                return n, found
        return 0, []

    def continuations(self, max_n: int, min_n: int, length: int, limit: int) -> list[list[int]]:
        """The continuations of `lookup`, without the matched n."""
        return self.lookup(max_n, min_n, length, limit)[1]

    def retrieve(self, max_n: int, min_n: int, length: int, limit: int) -> tuple[np.ndarray, int]:
        """REST-style retrieval from the context: the continuations of (up to `limit`, most recent
        first) earlier occurrences of the longest trailing n-gram that occurred before.
        Returns ([k, length] int64 rows padded with -1 where the context ends, that n or 0)."""
        for n in range(min(max_n, len(self._toks) - 1), min_n - 1, -1):
            starts = self.earlier(n, scan=limit)[:limit]
            if starts:
                return gather_rows(self.array, np.asarray(starts, dtype=np.int64), length), n
        return np.empty((0, length), dtype=np.int64), 0


def gather_rows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """tokens[s : s + length] for each s in starts, as [len(starts), length] int64; positions
    past the end of `tokens` are -1 (as are document separators already in `tokens`)."""
    idx = starts[:, None] + np.arange(length)[None, :]  # [k, length]
    past = idx >= tokens.shape[0]
    rows = tokens[np.minimum(idx, tokens.shape[0] - 1)].astype(np.int64)
    rows[past] = -1
    return rows


def find_continuations(
    tokens: np.ndarray, max_ngram: int, min_ngram: int, length: int, limit: int
) -> list[list[int]]:
    """One-off prompt lookup over a whole token array (builds a throwaway index)."""
    index = ContextIndex(max_ngram)
    index.extend(tokens.tolist())
    return index.continuations(max_ngram, min_ngram, length, limit)


#: Grades of n-gram drafts are capped here: beyond 16 matched tokens the evidence hardly grows.
MAX_GRADE = 16


def match_grades(span: int, parents: torch.Tensor) -> torch.Tensor:
    """Grades (`Draft.grades`) of a draft copied from where the context's last `span` tokens
    occurred before: for a node at depth d, the tokens that match the source behind it once its
    ancestors are accepted, span + d - 1, capped at MAX_GRADE. Replaying the default Spec-Bench
    run (`benchmarks/replay_drafts.py`), a prompt-lookup first node behind one matched token was
    accepted 23% of the time, behind three 80%.
    parents: [num_nodes] -> [num_nodes] int64."""
    return (depths(parents) + span - 1).clamp(max=MAX_GRADE)
