"""ADED (Liu, Lei, Zhang and Xu, "Adaptive Draft-Verification for Efficient Large Language Model
Decoding", AAAI 2025).

The target's output distribution is approximated by a tri-gram matrix: for each bigram (a, b),
weights of the tokens c that followed it (built from a corpus, pruned to the top 12 successors
per bigram). The matrix adapts while decoding: before each draft, every tri-gram of the last 16
committed tokens gains a small weight (0.04, capped at 3.0), so recent patterns come to
dominate. Drafts come from a Monte Carlo tree search over bigram states that balances
exploitation (tri-gram weights) and exploration (visit counts) with the pUCT rule; the most
visited paths, each extended by its best successor, are merged into one token tree.
The constants are those of the authors' released implementation.

Corpus: a REST datastore file (`outpace datastore build`) when given, and always the prompt's
own tri-grams; the matrix persists across `start()` calls, so it keeps adapting over requests.
Proposals are deterministic given the search (point masses, q None): the tree is chosen by
visit counts, not sampled from the tri-gram distribution, so it carries no draft probabilities
that the verifier could use (a point-mass tree with distinct siblings is lossless at any
temperature).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from outpace.drafters.base import DraftContext, deep_size
from outpace.drafters.trie import prefix_trie, select_top, trie_draft
from outpace.errors import OutpaceError
from outpace.types import Draft, VerifyResult

Successors = Callable[[int, int], tuple[list[int], list[float]]]


@dataclass(frozen=True)
class AdedConfig:
    iterations: int = 150  # MCTS simulations per draft
    depth: int = 4  # draft tokens per searched path (searched depth - 1, plus a greedy extension)
    paths: int = 24  # most visited paths merged into the tree
    successors: int = 12  # successors kept per bigram
    window: int = 16  # adaptation window (committed tokens)
    boost: float = 0.04  # weight added to each tri-gram in the window, per draft
    cap: float = 3.0  # weight cap
    c1: float = 32.0  # pUCT exploration constants
    c2: float = 8.0
    max_bigrams: int = 65536  # adapted bigrams kept (least recently adapted dropped first)

    def __post_init__(self) -> None:
        for name in ("iterations", "depth", "paths", "successors", "window", "max_bigrams"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OutpaceError(f"aded {name} must be a positive integer, got {value!r}")
        if self.depth < 2:
            raise OutpaceError(f"aded depth must be >= 2, got {self.depth}")
        if not (self.boost > 0 and self.cap > 0 and self.c1 > 0 and self.c2 > 0):
            raise OutpaceError("aded boost, cap, c1 and c2 must be positive")


class TrigramMatrix:
    """(a, b) -> {c: weight}: a read-only corpus part in CSR arrays plus an adaptive overlay.

    base_keys: [m] int64 sorted keys a << 32 | b; base_off: [m + 1]; base_tok/base_w: [nnz].
    A bigram touched by adaptation is copied into the overlay (copy on write). The matrix
    persists across requests, so the overlay is bounded: at most `max_bigrams` rows (the least
    recently adapted is dropped, falling back to its corpus row) of at most 2 * `successors`
    entries (the lightest is dropped; only the top `successors` are ever drafted from).
    """

    def __init__(self, successors: int, max_bigrams: int = 65536) -> None:
        self.successors = successors
        self.max_bigrams = max_bigrams
        self.base_keys = np.zeros(0, dtype=np.int64)
        self.base_off = np.zeros(1, dtype=np.int64)
        self.base_tok = np.zeros(0, dtype=np.int64)
        self.base_w = np.zeros(0, dtype=np.float32)
        self.overlay: OrderedDict[tuple[int, int], dict[int, float]] = OrderedDict()

    def load_corpus(self, tokens: np.ndarray) -> None:
        """Normalized tri-gram counts of a token array (-1 separates documents), top successors
        per bigram."""
        self.base_keys, self.base_off, self.base_tok, self.base_w = trigram_csr(tokens, self.successors)
        self.overlay.clear()

    def get(self, a: int, b: int) -> dict[int, float]:
        row = self.overlay.get((a, b))
        if row is not None:
            return row
        key = (a << 32) | b
        i = int(np.searchsorted(self.base_keys, key))
        if i == self.base_keys.shape[0] or self.base_keys[i] != key:
            return {}
        lo, hi = int(self.base_off[i]), int(self.base_off[i + 1])
        return dict(zip(self.base_tok[lo:hi].tolist(), self.base_w[lo:hi].tolist()))

    def add(self, a: int, b: int, c: int, amount: float, cap: float) -> None:
        row = self.overlay.get((a, b))
        if row is None:
            row = self.overlay[(a, b)] = self.get(a, b)
            if len(self.overlay) > self.max_bigrams:
                self.overlay.popitem(last=False)
        else:
            self.overlay.move_to_end((a, b))
        row[c] = min(row.get(c, 0.0) + amount, cap)
        if len(row) > 2 * self.successors:
            del row[min((t for t in row if t != c), key=row.__getitem__)]

    def nbytes(self) -> int:
        return deep_size(self.base_keys, self.base_off, self.base_tok, self.base_w, self.overlay)

    def top(self, a: int, b: int) -> tuple[list[int], list[float]]:
        """The best `successors` successors of (a, b) and their weights, best first."""
        items = sorted(self.get(a, b).items(), key=lambda kv: -kv[1])[: self.successors]
        return [t for t, _ in items], [w for _, w in items]


def trigram_csr(tokens: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorized tri-gram counting: (keys, offsets, successor tokens, normalized weights), the
    `keep` most frequent successors per bigram, keys a << 32 | b sorted."""
    t = tokens.astype(np.int64)
    if t.shape[0] < 3:
        z = np.zeros(0, dtype=np.int64)
        return z, np.zeros(1, dtype=np.int64), z, np.zeros(0, dtype=np.float32)
    a, b, c = t[:-2], t[1:-1], t[2:]
    ok = (a >= 0) & (b >= 0) & (c >= 0)
    key, succ = (a[ok] << 32) | b[ok], c[ok]
    pairs = np.unique(np.stack([key, succ], axis=1), axis=0, return_counts=True)
    (key, succ), count = pairs[0].T, pairs[1]
    order = np.lexsort((-count, key))  # by key, most frequent first
    key, succ, count = key[order], succ[order], count[order]
    first = np.r_[True, key[1:] != key[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    total = np.add.reduceat(count, starts)  # [m]
    rank = np.arange(key.shape[0]) - starts[group]
    sel = rank < keep
    key, succ, weight = key[sel], succ[sel], (count / total[group])[sel]
    ukeys, offs = np.unique(key, return_index=True)
    return ukeys, np.r_[offs, key.shape[0]].astype(np.int64), succ, weight.astype(np.float32)


def mcts_paths(
    succ: Successors, root: tuple[int, int], cfg: AdedConfig, rng: np.random.Generator
) -> list[tuple[list[int], int]]:
    """ADED's draft search: pUCT selection over bigram states, expansion with tri-gram priors,
    weighted random rollouts to `cfg.depth - 1` tokens, reward 1 + sum of the path's tri-gram
    weights. Returns the `cfg.paths` most visited paths (tokens after the root, each extended by
    its best successor) with their visit counts."""
    state = [root]  # node -> bigram
    kids: list[list[int]] = [[]]
    parent, visits, score, prior = [-1], [0], [0.0], [0.0]
    horizon = cfg.depth - 1
    for _ in range(cfg.iterations):
        node, depth = 0, 0
        while kids[node] and depth < horizon:  # selection
            n = visits[node]
            explore = (cfg.c1 + math.log((n + cfg.c2 + 1) / cfg.c2)) * math.sqrt(n)
            node = max(kids[node], key=lambda c: math.inf if visits[c] == 0
                       else score[c] / visits[c] + explore * prior[c] / (1 + visits[c]))
            depth += 1
        if depth < horizon and not kids[node]:  # expansion
            a, b = state[node]
            toks, weights = succ(a, b)
            for t, w in zip(toks, weights):
                kids[node].append(len(state))
                state.append((b, t))
                parent.append(node)
                kids.append([])
                visits.append(0)
                score.append(0.0)
                prior.append(w)
            if kids[node]:
                node, depth = kids[node][0], depth + 1
        reward, (a, b) = 1.0 + _path_weight(succ, state, parent, node), state[node]
        for _ in range(depth, horizon):  # rollout
            toks, weights = succ(a, b)
            if not toks:
                break
            pick = int(rng.choice(len(toks), p=np.asarray(weights) / sum(weights)))
            reward += weights[pick]
            a, b = b, toks[pick]
        while node >= 0:  # backpropagation
            visits[node] += 1
            score[node] += reward
            node = parent[node]
    return _most_visited(succ, state, parent, visits, cfg.paths)


def _most_visited(succ: Successors, state: list[tuple[int, int]], parent: list[int], visits: list[int],
                  count: int) -> list[tuple[list[int], int]]:
    """The `count` most visited search nodes as token paths from the root, each extended by the
    best successor of its last bigram, with their visit counts."""
    ranked = sorted((i for i in range(1, len(state)) if visits[i]), key=lambda i: -visits[i])[:count]
    out = []
    for i in ranked:
        path, j = [], i
        while j > 0:
            path.append(state[j][1])
            j = parent[j]
        path.reverse()
        toks, _ = succ(*state[i])
        out.append((path + toks[:1], visits[i]))
    return out


def _path_weight(succ: Successors, state: list[tuple[int, int]], parent: list[int], node: int) -> float:
    total = 0.0
    while parent[node] >= 0:
        a, b = state[parent[node]]
        toks, weights = succ(a, b)
        c = state[node][1]
        total += weights[toks.index(c)] if c in toks else 0.0
        node = parent[node]
    return total


class AdedDrafter:
    """ADED: an adaptive tri-gram matrix searched by MCTS. Deterministic tree (q None)."""

    name = "aded"
    makes_trees = True

    def __init__(self, config: AdedConfig = AdedConfig(), corpus: np.ndarray | None = None) -> None:
        self.config = config
        self.matrix = TrigramMatrix(config.successors, config.max_bigrams)
        if corpus is not None:
            self.matrix.load_corpus(corpus)

    def start(self, prompt: Sequence[int]) -> None:
        p = [int(t) for t in prompt]
        for a, b, c in zip(p, p[1:], p[2:]):
            self.matrix.add(a, b, c, self.config.boost, self.config.cap)

    def state_bytes(self) -> int:
        return self.matrix.nbytes()

    def propose(self, ctx: DraftContext) -> Draft:
        cfg = self.config
        tail = [int(t) for t in ctx.tokens[-cfg.window :]]
        if ctx.budget <= 0 or len(tail) < 2:
            return Draft.empty()
        for a, b, c in zip(tail, tail[1:], tail[2:]):  # adapt to the recent window
            self.matrix.add(a, b, c, cfg.boost, cfg.cap)
        memo: dict[tuple[int, int], tuple[list[int], list[float]]] = {}

        def succ(a: int, b: int) -> tuple[list[int], list[float]]:
            if (a, b) not in memo:
                memo[(a, b)] = self.matrix.top(a, b)
            return memo[(a, b)]

        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.rng))
        found = mcts_paths(succ, (tail[-2], tail[-1]), cfg, np.random.default_rng(seed))
        if not found:
            return Draft.empty()
        rows = np.full((len(found), cfg.depth), -1, dtype=np.int64)  # [paths, depth]
        for i, (path, _) in enumerate(found):
            rows[i, : len(path)] = path[: cfg.depth]
        trie = prefix_trie(rows, np.array([v for _, v in found], dtype=np.float64))
        return trie_draft(select_top(trie, trie.weight, ctx.budget))

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass  # ADED adapts from the committed tokens (see propose)
