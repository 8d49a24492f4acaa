"""Weighted token tries, shared by the retrieval drafters (REST, RASD, prompt lookup) and ADED.

REST (He et al., "REST: Retrieval-Based Speculative Decoding", 2024, section 3.2) builds a trie
of the retrieved continuations, weights each node by how many continuations pass through it,
and verifies the most frequent nodes as one tree. `prefix_trie` builds that trie from a matrix of
continuations with numpy (no Python loop over the continuations), and `select_top` keeps the
best `budget` nodes as a tree, which is prefix-closed because a node never outweighs its parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from outpace.types import Draft


@dataclass(frozen=True)
class Trie:
    """Nodes in breadth-first order (parents before children, depth by depth).

    tokens:  [n] int64 token of each node.
    parents: [n] int64 parent node (-1 = a child of the root); parents[i] < i.
    depth:   [n] int64, 1 for children of the root.
    weight:  [n] float64, total weight of the rows that pass through the node.
    first:   [n] int64, the depth-1 ancestor of each node (itself at depth 1).
    """

    tokens: np.ndarray
    parents: np.ndarray
    depth: np.ndarray
    weight: np.ndarray
    first: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @staticmethod
    def empty() -> Trie:
        z = np.zeros(0, dtype=np.int64)
        return Trie(z, z, z, np.zeros(0), z)


def prefix_trie(rows: np.ndarray, weights: np.ndarray | None = None) -> Trie:
    """The trie of all prefixes of `rows`: [k, L] int64; a row ends at its first negative entry.

    weights: [k] (default 1 each); a node's weight is the sum over the rows through it.
    Sorting the rows makes every prefix a contiguous block, so each depth is one vectorized pass.
    """
    k, width = rows.shape
    if k == 0 or width == 0:
        return Trie.empty()
    order = np.lexsort(rows.T[::-1])  # lexicographic, first column primary
    m = rows[order]  # [k, L]
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    csum = np.concatenate([[0.0], np.cumsum(w)])  # [k + 1]
    valid = np.logical_and.accumulate(m >= 0, axis=1)  # [k, L]
    differs = np.ones((k, width), dtype=bool)
    differs[1:] = m[1:] != m[:-1]
    opens = np.logical_or.accumulate(differs, axis=1)  # [k, L]: row opens a new prefix at depth d
    toks, pars, deps, wts, firsts = [], [], [], [], []
    row_node = np.full(k, -1, dtype=np.int64)  # node holding each row's prefix at depth d - 1
    row_first = np.full(k, -1, dtype=np.int64)
    base = 0
    for d in range(width):
        starts = np.flatnonzero(opens[:, d])
        ends = np.append(starts[1:], k)
        keep = valid[starts, d]
        if not keep.any():
            break
        ids = np.full(starts.shape[0], -1, dtype=np.int64)
        ids[keep] = base + np.arange(int(keep.sum()))
        s = starts[keep]
        toks.append(m[s, d])
        pars.append(row_node[s])
        deps.append(np.full(s.shape[0], d + 1, dtype=np.int64))
        wts.append(csum[ends[keep]] - csum[s])
        firsts.append(ids[keep] if d == 0 else row_first[s])
        group = np.cumsum(opens[:, d]) - 1  # [k] index into starts
        row_node = ids[group]
        if d == 0:
            row_first = row_node.copy()
        base += s.shape[0]
    cat = np.concatenate
    return Trie(cat(toks), cat(pars), cat(deps), cat(wts), cat(firsts))


def select_top(trie: Trie, score: np.ndarray, budget: int) -> Trie:
    """The `budget` best nodes by score (ties: shallower first), as a tree.

    Scores are first capped by the parent's score depth by depth, so the kept set is
    prefix-closed; the result keeps breadth-first order with parents re-indexed.
    """
    n = len(trie)
    if n == 0 or budget <= 0:
        return Trie.empty()
    s = np.asarray(score, dtype=np.float64).copy()
    for d in range(2, int(trie.depth.max()) + 1):
        at = np.flatnonzero(trie.depth == d)
        s[at] = np.minimum(s[at], s[trie.parents[at]])
    keep = np.sort(np.lexsort((trie.depth, -s))[:budget])  # [<= budget] node ids, BFS order
    new_id = np.full(n, -1, dtype=np.int64)
    new_id[keep] = np.arange(keep.shape[0])
    parents = trie.parents[keep]
    parents = np.where(parents >= 0, new_id[np.maximum(parents, 0)], -1)
    return Trie(trie.tokens[keep], parents, trie.depth[keep], s[keep], new_id[trie.first[keep]])


def trie_draft(trie: Trie) -> Draft:
    """A deterministic draft (q None) from a trie whose siblings are distinct tokens."""
    return Draft(torch.as_tensor(trie.tokens, dtype=torch.long), torch.as_tensor(trie.parents, dtype=torch.long))


def draft_of(tokens: list[int], parents: list[int], q: torch.Tensor | None = None) -> Draft:
    return Draft(torch.tensor(tokens, dtype=torch.long), torch.tensor(parents, dtype=torch.long), q)
