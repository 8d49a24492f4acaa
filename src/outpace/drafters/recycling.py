"""Token Recycling (Luo et al., "Turning Trash into Treasure: Accelerating Inference of Large
Language Models with Token Recycling", ACL 2025).

Every verification forward computes the target's distribution at each tree node and keeps only
the path it accepts; the other high-probability candidates are "trash" that tends to recur. The
method keeps, for every token id, the top-k candidate next tokens the target last produced after
it (an adjacency matrix [vocab, k]); each step builds a draft tree by a breadth-first walk of a
static tree template from the last committed token (a template node [i, j] takes the j-th
candidate of the token its parent [i] got), verifies it with tree attention, then overwrites the
rows of every token in the tree with the top-k of the logits at its position.

Storage: the paper's matrix is dense, int64 [32000, 8] = 1.95 MB. Here a row is allocated the
first time its token gets candidates (an int32 row index per vocabulary entry + int32 [rows, k]),
which stays below 2 MB for a 150k vocabulary until some 47k distinct tokens have been seen.
Token ids without a row have no candidates (the paper's rows start as zeros, i.e. token 0): only
the root may then propose that placeholder, so that a first verification happens and fills it.
The matrix survives `start()` ("hot start": what one request recycled helps the next).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from outpace.drafters.base import DraftContext
from outpace.drafters.trie import draft_of
from outpace.errors import OutpaceError
from outpace.types import Draft, VerifyResult

#: The paper's default tree template "2.2.2": 80 nodes on 6 levels; a node is the path of
#: candidate ranks from the root ([0, 1] = the 2nd candidate of the root's 1st candidate).
#: Written as (rank path prefix, number of children ranks 0..c-1) runs, level by level.
_TEMPLATE_RUNS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((), 8),
    ((0,), 8), ((1,), 4), ((2,), 3), ((3,), 2), ((4,), 1), ((5,), 1), ((6,), 1), ((7,), 1),
    ((0, 0), 8), ((0, 1), 3), ((0, 2), 2), ((0, 3), 1), ((0, 4), 1), ((0, 5), 1), ((0, 6), 1),
    ((0, 7), 1), ((1, 0), 2), ((1, 1), 1), ((2, 0), 1), ((3, 0), 1), ((4, 0), 1), ((5, 0), 1),
    ((0, 0, 0), 5), ((0, 0, 1), 2), ((0, 0, 2), 1), ((0, 0, 3), 1), ((0, 0, 4), 1), ((0, 1, 0), 1),
    ((0, 2, 0), 1), ((1, 0, 0), 1), ((2, 0, 0), 1), ((3, 0, 0), 1),
    ((0, 0, 0, 0), 3), ((0, 0, 0, 1), 1), ((0, 0, 0, 2), 1), ((0, 0, 1, 0), 1), ((0, 1, 0, 0), 1),
    ((1, 0, 0, 0), 1),
    ((0, 0, 0, 0, 0), 2), ((0, 0, 0, 1, 0), 1),
)


def paper_template(k: int = 8) -> list[tuple[int, ...]]:
    """The rank paths of the paper's template (80 nodes for k = 8), level by level; with k < 8,
    only the nodes whose ranks are all below k."""
    return [p + (r,) for p, count in _TEMPLATE_RUNS for r in range(count) if max(p + (r,)) < k]


@dataclass(frozen=True)
class RecyclingConfig:
    """k: candidates kept per token (the paper's 8). decay: prior acceptance factor per rank
    step, used only to order template nodes when the budget is below the template's size."""

    k: int = 8
    decay: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or not 1 <= self.k <= 64:
            raise OutpaceError(f"recycling k (candidates per token) must be in 1..64, got {self.k!r}")
        if not 0.0 < self.decay < 1.0:
            raise OutpaceError(f"recycling decay must be in (0, 1), got {self.decay!r}")


def budget_order(template: Sequence[tuple[int, ...]], decay: float) -> list[int]:
    """Template node indices, best first: a node's prior is prod over its path of
    decay ** (rank + 1) (deeper and lower-ranked nodes are less likely accepted); ties go to the
    shallower, earlier node. Any prefix of this order is a tree, since a child never outranks its
    parent."""
    index = {path: i for i, path in enumerate(template)}
    heap = [(-decay ** (p[0] + 1), 1, index[p]) for p in template if len(p) == 1]
    heapq.heapify(heap)
    children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for p in template:
        children.setdefault(p[:-1], []).append(p)
    order = []
    while heap:
        neg, depth, i = heapq.heappop(heap)
        order.append(i)
        for c in children.get(template[i], []):
            heapq.heappush(heap, (neg * decay ** (c[-1] + 1), depth + 1, index[c]))
    return order


class AdjacencyMatrix:
    """top-k candidate next tokens per token id, rows allocated on first write.

    row_of: [vocab] int32, 0 = no row; rows: [capacity, k] int32, row 0 unused.
    """

    def __init__(self, vocab: int, k: int) -> None:
        self.vocab, self.k = vocab, k
        self.row_of = np.zeros(vocab, dtype=np.int32)  # [vocab]
        self.rows = np.zeros((64, k), dtype=np.int32)  # [capacity, k]
        self.used = 1

    @property
    def nbytes(self) -> int:
        return int(self.row_of.nbytes + self.used * self.k * 4)

    def candidates(self, token: int) -> np.ndarray | None:
        """[k] candidates of `token`, best first, or None if it has none yet."""
        r = int(self.row_of[token])
        return self.rows[r] if r else None

    def update(self, tokens: np.ndarray, topk: np.ndarray) -> None:
        """Set the row of tokens[i] to topk[i] ([n] and [n, k]); a token that occurs several
        times keeps its last row."""
        last = len(tokens) - 1 - np.unique(tokens[::-1], return_index=True)[1]  # last occurrence
        toks = tokens[last]
        fresh = toks[self.row_of[toks] == 0]
        if fresh.size:
            need = self.used + fresh.size
            if need > self.rows.shape[0]:
                grown = np.zeros((max(need, 2 * self.rows.shape[0]), self.k), dtype=np.int32)
                grown[: self.used] = self.rows[: self.used]
                self.rows = grown
            self.row_of[fresh] = np.arange(self.used, need, dtype=np.int32)
            self.used = need
        self.rows[self.row_of[toks]] = topk[last]


def build_tree(
    adj: AdjacencyMatrix, root: int, template: Sequence[tuple[int, ...]], order: Sequence[int], budget: int
) -> tuple[list[int], list[int]]:
    """Breadth-first expansion of the template from `root` (at most `budget` nodes).

    Template nodes are taken in `order`; a node is skipped when its parent was skipped, when its
    parent's token has no candidates, or when its token repeats a sibling's (siblings must be
    distinct point masses). Returns (tokens, parents) in breadth-first order.
    """
    picked: list[tuple[int, tuple[int, ...], int]] = []  # (template index, path, token)
    token_of: dict[tuple[int, ...], int] = {(): root}
    seen: set[tuple[tuple[int, ...], int]] = set()
    for i in order:
        if len(picked) >= budget:
            break
        path = template[i]
        parent = path[:-1]
        if parent not in token_of:
            continue
        cands = adj.candidates(token_of[parent])
        if cands is None:
            if parent or path[-1] != 0:
                continue
            tok = 0  # the paper's zero-initialized row: propose a placeholder to learn the root
        else:
            tok = int(cands[path[-1]]) if path[-1] < adj.k else -1
        if tok < 0 or (parent, tok) in seen:
            continue
        seen.add((parent, tok))
        token_of[path] = tok
        picked.append((i, path, tok))
    picked.sort(key=lambda x: (len(x[1]), x[0]))  # breadth-first, template order within a level
    tokens: list[int] = []
    parents: list[int] = []
    placed: dict[tuple[int, ...], int] = {}
    for _, path, tok in picked:
        placed[path] = len(tokens)
        tokens.append(tok)
        parents.append(placed[path[:-1]] if len(path) > 1 else -1)
    return tokens, parents


class RecyclingDrafter:
    """Token Recycling: adjacency-matrix drafts over a static template. Deterministic (q None)."""

    name = "recycling"
    makes_trees = True

    def __init__(self, vocab_size: int, config: RecyclingConfig = RecyclingConfig(),
                 template: Sequence[tuple[int, ...]] | None = None) -> None:
        self.config = config
        self.template = list(template) if template is not None else paper_template(config.k)
        if any(r >= config.k for p in self.template for r in p):
            raise OutpaceError(f"the recycling tree template uses ranks >= k={config.k}")
        if vocab_size < config.k:
            raise OutpaceError(f"recycling k={config.k} exceeds the vocabulary of {vocab_size} tokens")
        self.order = budget_order(self.template, config.decay)
        self.adj = AdjacencyMatrix(vocab_size, config.k)
        self._root = -1

    def start(self, prompt: Sequence[int]) -> None:
        pass  # hot start: the matrix carries over between sequences

    def state_bytes(self) -> int:
        """The adjacency matrix as allocated: row index [vocab] + rows [capacity, k], int32."""
        return int(self.adj.row_of.nbytes + self.adj.rows.nbytes)

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        self._root = int(ctx.tokens[-1])
        tokens, parents = build_tree(self.adj, self._root, self.template, self.order, ctx.budget)
        return draft_of(tokens, parents)

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        """Recycle: every tree input (root and all nodes, accepted or not) gets the top-k of the
        target's logits at its position. target_logits: [len(draft) + 1, vocab]."""
        topk = torch.topk(target_logits, self.config.k, dim=-1).indices  # [n + 1, k]
        inputs = np.concatenate([[self._root], draft.tokens.numpy()])  # [n + 1]
        self.adj.update(inputs.astype(np.int64), topk.numpy().astype(np.int32))
