"""RASD (Quan et al., "RASD: Retrieval-Augmented Speculative Decoding", Findings of ACL 2025).

A draft model is weak out of its domain and slow to draft far; retrieval (prompt lookup over the
context, or a REST datastore) is free but noisy. RASD combines them:

- Tree pruning: the draft model's distribution at the first draft position (which it computes
  anyway) scores the retrieval trie. Candidates whose first token is not among the draft model's
  top-k are dropped; a node's score is the draft probability of its first token times the
  retrieval frequency of the node relative to that first token, and the best nodes are kept.
- Tree fusion: the draft model's proposal and the pruned retrieval tree are merged by longest
  prefix matching: a retrieved sequence follows the draft's path while their tokens agree and
  branches off where they differ, giving one tree verified in one target forward.

Here the draft model is `DraftModelDrafter` (a chain; the paper fuses with EAGLE-2's tree), used
by composition: a thin backend proxy reads the logits of its first forward, i.e. the draft
distribution after the root.

Losslessness at temperature > 0: retrieved nodes are point masses (one-hot q rows) and the
drafted nodes carry their draft distribution. At a node with retrieved children R, the drafted
child d was sampled from q; when d is in R the two merge (the retrieved node stands), otherwise
d is, given that, a sample from q restricted to the tokens outside R and renormalized, and that
is its q row. Retrieved children come first among siblings, so the SpecInfer verifier rejects
them before it meets the drafted child. R must not depend on the draft sample, so the retrieval
tree is chosen with its own budget before fusion (merges only make the fused tree smaller).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from outpace.backends.base import Backend, ForwardOutput
from outpace.drafters.base import DraftContext
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.rest import RestConfig, Retriever
from outpace.drafters.trie import Trie, prefix_trie, select_top
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, probs
from outpace.types import Draft, VerifyResult


@dataclass(frozen=True)
class RasdConfig:
    draft_tokens: int = 4  # the draft model's chain length (at most half the step's budget)
    top_k: int = 8  # retrieved sequences must start with one of the draft model's top-k tokens
    retrieval: RestConfig = field(default_factory=lambda: RestConfig(min_span=1, limit=256))

    def __post_init__(self) -> None:
        if not isinstance(self.draft_tokens, int) or self.draft_tokens < 1:
            raise OutpaceError(f"rasd draft_tokens must be a positive integer, got {self.draft_tokens!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise OutpaceError(f"rasd top_k must be a positive integer, got {self.top_k!r}")


def prune_scores(trie: Trie, q0: np.ndarray, top_k: int) -> np.ndarray:
    """RASD's tree pruning score of every retrieval trie node: q0[first token] * weight(node) /
    weight(first-token node), or -inf when the first token is outside q0's top-k. q0: [vocab]."""
    if len(trie) == 0:
        return np.zeros(0)
    allowed = np.zeros(q0.shape[0], dtype=bool)
    allowed[np.argsort(-q0, kind="stable")[:top_k]] = True
    first_tok = trie.tokens[trie.first]
    score = q0[first_tok] * trie.weight / trie.weight[trie.first]
    return np.where(allowed[first_tok] & (q0[first_tok] > 0), score, -np.inf)


@dataclass
class Fused:
    """A fused tree, breadth-first; siblings: retrieved ones first, then the drafted one.

    tokens/parents: the tree; chain_pos[i]: the draft chain position node i came from (-1 if
    none); retrieved[i]: node i is in the retrieval tree (merged nodes included)."""

    tokens: list[int]
    parents: list[int]
    chain_pos: list[int]
    retrieved: list[bool]


def fuse(chain: Sequence[int], trie: Trie) -> Fused:
    """Longest-prefix-matching fusion of a draft chain with a retrieval trie (both continue the
    root): shared prefixes become shared nodes."""
    kids: list[dict[int, int]] = [{}]  # fused node + 1 -> {token: fused node}
    tok: list[int] = []
    par: list[int] = []
    pos: list[int] = []
    ret: list[bool] = []

    def child(parent: int, token: int) -> int:
        node = kids[parent + 1].get(token)
        if node is None:
            node = len(tok)
            kids[parent + 1][token] = node
            kids.append({})
            tok.append(token)
            par.append(parent)
            pos.append(-1)
            ret.append(False)
        return node

    node = -1
    for j, t in enumerate(chain):
        node = child(node, int(t))
        pos[node] = j
    where = np.full(len(trie), -1, dtype=np.int64)
    for i in range(len(trie)):  # breadth-first: parents are placed first
        p = int(trie.parents[i])
        where[i] = child(-1 if p < 0 else int(where[p]), int(trie.tokens[i]))
        ret[where[i]] = True
    return _breadth_first(Fused(tok, par, pos, ret))


def _breadth_first(tree: Fused) -> Fused:
    """Reorder depth by depth, retrieved siblings before drafted ones, parents re-indexed."""
    n = len(tree.tokens)
    depth = [0] * n
    for i in range(n):  # nodes were created after their parents
        depth[i] = 1 if tree.parents[i] < 0 else depth[tree.parents[i]] + 1
    rank: dict[int, int] = {-1: -1}
    order: list[int] = []
    for d in range(1, max(depth, default=0) + 1):
        level = [i for i in range(n) if depth[i] == d]
        level.sort(key=lambda i: (rank[tree.parents[i]], not tree.retrieved[i], i))
        for i in level:
            rank[i] = len(order)
            order.append(i)
    return Fused(
        [tree.tokens[i] for i in order], [rank[tree.parents[i]] for i in order],
        [tree.chain_pos[i] for i in order], [tree.retrieved[i] for i in order],
    )


def fused_q(tree: Fused, chain_q: torch.Tensor, vocab: int) -> torch.Tensor:
    """q rows of a fused tree: one-hot for retrieved nodes, the drafted node's own row with its
    retrieved siblings' tokens removed and renormalized. chain_q: [chain, vocab] -> [n, vocab]."""
    n = len(tree.tokens)
    q = torch.zeros(n, vocab)  # [num_nodes, vocab]
    siblings: dict[int, list[int]] = {}
    for i in range(n):
        if tree.retrieved[i]:
            q[i, tree.tokens[i]] = 1.0
            siblings.setdefault(tree.parents[i], []).append(tree.tokens[i])
    for i in range(n):
        if not tree.retrieved[i]:
            row = chain_q[tree.chain_pos[i]].clone()
            row[siblings.get(tree.parents[i], [])] = 0.0
            q[i] = row / row.sum()
    return q


class _LogitTap:
    """A backend proxy that keeps the last row of the first forward's logits after `arm()`."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.root: torch.Tensor | None = None
        self._armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def arm(self) -> None:
        self._armed, self.root = True, None

    def forward(self, cache: Any, tokens: torch.Tensor, *args: Any, **kwargs: Any) -> ForwardOutput:
        out = self._backend.forward(cache, tokens, *args, **kwargs)
        if self._armed:
            self.root, self._armed = out.logits[-1], False
        return out


class RasdDrafter:
    """RASD: the draft model's chain fused with a pruned retrieval tree."""

    name = "rasd"
    makes_trees = True

    def __init__(self, draft: Backend, retriever: Retriever, config: RasdConfig = RasdConfig()) -> None:
        self._tap = _LogitTap(draft)
        self.draft = DraftModelDrafter(self._tap)  # type: ignore[arg-type]
        self.retriever, self.config = retriever, config
        self.vocab = int(draft.vocab_size)

    def start(self, prompt: Sequence[int]) -> None:
        self.draft.start(prompt)
        self.retriever.start(prompt)

    def state_bytes(self) -> int:
        """The retrieval index (the draft model's weights and KV cache are not counted)."""
        return self.retriever.nbytes()

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        cfg = self.config
        k = min(cfg.draft_tokens, (ctx.budget + 1) // 2)
        self._tap.arm()
        chain = self.draft.propose(DraftContext(ctx.tokens, k, ctx.sampling, ctx.rng))
        assert self._tap.root is not None
        shaping = SamplingConfig(temperature=1.0) if ctx.sampling.greedy else ctx.sampling
        q0 = probs(self._tap.root, shaping).double().numpy()  # [vocab]
        trie = prefix_trie(self.retriever.retrieve(ctx.tokens, cfg.retrieval)[0])
        score = prune_scores(trie, q0, cfg.top_k)
        kept = select_top(trie, score, min(ctx.budget - k, int(np.isfinite(score).sum())))
        tree = fuse(chain.tokens.tolist(), kept)
        q = None if chain.q is None else fused_q(tree, chain.q, chain.q.shape[1])
        return Draft(torch.tensor(tree.tokens, dtype=torch.long), torch.tensor(tree.parents, dtype=torch.long), q)

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass
