"""Tree verification: multi-step speculative sampling of SpecInfer (Miao et al., "SpecInfer:
Accelerating Generative LLM Serving with Tree-based Speculative Inference and Verification",
2024, Algorithm 2), i.e. recursive rejection sampling over the children of each node.
Terms and p/q notation: see `outpace.verify`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from outpace.sampling import SamplingConfig, probs, sample
from outpace.tree import children as tree_children
from outpace.types import VerifyResult
from outpace.verify.chain import accepts, residual


def greedy_tree(
    tokens: torch.Tensor,  # [n] draft tokens
    parents: torch.Tensor,  # [n] parent index, -1 = root
    target_logits: torch.Tensor,  # [n + 1, vocab]
) -> VerifyResult:
    """Temperature 0: walk down from the root, following the child equal to the target's argmax."""
    best = target_logits.argmax(-1).tolist()  # [n + 1]
    kids = tree_children(parents)
    toks = tokens.tolist()
    path: list[int] = []
    row = 0
    while True:
        nxt = next((c for c in kids[row] if toks[c] == best[row]), None)
        if nxt is None:
            return VerifyResult(path, best[row], recovered=bool(kids[row]))
        path.append(nxt)
        row = nxt + 1


def specinfer_tree(
    tokens: torch.Tensor,  # [n] draft tokens
    parents: torch.Tensor,  # [n] parent index, -1 = root
    q: torch.Tensor | None,  # [n, vocab] distribution node i was drawn from, or None (point masses)
    target_logits: torch.Tensor,  # [n + 1, vocab]
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> VerifyResult:
    """At each node, try its children in order: accept child x with probability
    min(1, p(x)/q(x)) where p is the current (residual) target distribution; after a rejection
    replace p by norm(max(p - q, 0)). If no child is accepted, emit a recovered token from the
    final residual; at a node without children emit a bonus token from p.

    Lossless when siblings are drawn independently from their q (SpecInfer, Theorem 4.2), or are
    distinct deterministic tokens (q None)."""
    toks = tokens.tolist()

    def select(p: torch.Tensor, nodes: list[int]) -> tuple[int | None, torch.Tensor]:
        for i, c in enumerate(nodes):
            qc = None if q is None else q[c]
            if accepts(p, qc, toks[c], rng):
                return i, p
            p = residual(p, qc, toks[c])
        return None, p

    return walk(probs(target_logits, sampling), tree_children(parents), select, rng)


#: (p at a node [vocab], the node's candidate children) -> (index of the accepted candidate, or
#: None and the distribution the recovered token is drawn from)
Select = Callable[[torch.Tensor, list[int]], tuple[int | None, torch.Tensor]]


def walk(
    p_all: torch.Tensor,  # [n + 1, vocab] target distribution after the root and after each node
    candidates: list[list[int]],  # [n + 1] candidate nodes below the root (row 0) and each node
    select: Select,
    rng: torch.Generator,
) -> VerifyResult:
    """The walk every stochastic tree verifier shares: from the root, let `select` accept one
    candidate child or reject them all. A rejection ends the step with a recovered token from
    the distribution `select` returns; a node without candidates ends it with a bonus token
    from p. The verifiers differ only in `select` (SpecInfer, SpecTr's K-SEQ, RSD)."""
    path: list[int] = []
    row = 0
    while True:
        nodes = candidates[row]
        if not nodes:
            return VerifyResult(path, sample(p_all[row], rng), recovered=False)
        i, dist = select(p_all[row], nodes)
        if i is None:
            return VerifyResult(path, sample(dist, rng), recovered=True)
        path.append(nodes[i])
        row = nodes[i] + 1
