"""Token-tree bookkeeping: depths, ancestor masks and children from a parents vector.

A tree is given by `parents`: [num_nodes] int64 with parents[i] < i and -1 for children of the
root (the last committed token). Everything here is pure and model-free.
"""

from __future__ import annotations

import torch


def validate_parents(parents: torch.Tensor) -> None:
    """Raise ValueError unless every node's parent precedes it (topological order)."""
    n = parents.shape[0]
    idx = torch.arange(n)
    if n and not bool(((parents >= -1) & (parents < idx)).all()):
        raise ValueError(f"parents must satisfy -1 <= parents[i] < i, got {parents.tolist()}")


def depths(parents: torch.Tensor) -> torch.Tensor:
    """Depth of each node: 1 for children of the root. parents: [n] -> [n] int64."""
    out: list[int] = []  # a list, not tensor writes: this runs on every drafting step
    for p in parents.tolist():
        out.append(1 if p < 0 else out[p] + 1)
    return torch.tensor(out, dtype=torch.long)


def ancestor_mask(parents: torch.Tensor) -> torch.Tensor:
    """[n, n] bool: mask[i, j] is True when node j is node i or one of its ancestors."""
    n = parents.shape[0]
    mask = torch.eye(n, dtype=torch.bool)
    for i, p in enumerate(parents.tolist()):
        if p >= 0:
            mask[i] |= mask[p]
    return mask


def children(parents: torch.Tensor) -> list[list[int]]:
    """children[0] lists the root's children; children[i + 1] lists node i's children."""
    out: list[list[int]] = [[] for _ in range(parents.shape[0] + 1)]
    for i, p in enumerate(parents.tolist()):
        out[p + 1].append(i)
    return out


def with_root(parents: torch.Tensor) -> torch.Tensor:
    """Parents of the tree that includes the root as node 0: [n] -> [n + 1]."""
    return torch.cat([torch.tensor([-1], dtype=parents.dtype), parents + 1])


def chain_parents(n: int) -> torch.Tensor:
    return torch.arange(-1, n - 1, dtype=torch.long)


def build_trie(sequences: list[list[int]]) -> tuple[list[int], list[int]]:
    """Merge token sequences that all continue the root into a trie.

    Returns (tokens, parents) in topological order; shared prefixes become shared nodes, so
    siblings are always distinct tokens.
    """
    tokens: list[int] = []
    parents: list[int] = []
    index: dict[tuple[int, int], int] = {}  # (parent, token) -> node
    for seq in sequences:
        parent = -1
        for tok in seq:
            node = index.get((parent, tok))
            if node is None:
                node = len(tokens)
                index[(parent, tok)] = node
                tokens.append(tok)
                parents.append(parent)
            parent = node
    return tokens, parents
