"""Multi-draft verifiers: several candidate tokens per position, at most one accepted.

Terms and the p/q notation are those of `outpace.verify`; in addition:

- **candidates** of a node: the draft tokens proposed for the position after it (its children in
  the draft tree), tried in a fixed order.
- **k-sequential selection** (K-SEQ; Sun et al., "SpecTr: Fast Speculative Decoding via Optimal
  Transport", NeurIPS 2023, section 4): the k candidates X_1..X_k are drawn i.i.d. from q. With
  rho in [1, k], beta(rho) = sum_x min(q(x), p(x)/rho) and acc = 1 - (1 - beta)^k, candidate X_i
  is accepted with probability min(1, p(X_i) / (rho q(X_i))); if none is, the recovered token is
  drawn from the K-SEQ residual
      p_res(x) = (p(x) - min(q(x), p(x)/rho) * acc / beta) / (1 - acc).
  It is exact whenever acc <= rho * beta; the smallest such rho (found on the sorted ratios p/q,
  O(V log V)) maximises acc, which is at least (1 - 1/e) times the optimal acceptance.
- **recursive rejection sampling without replacement** (Jeon et al., "Recursive Speculative
  Decoding: Accelerating LLM Inference via Sampling Without Replacement", 2024, section 3): the
  candidates X_1, X_2, ... are drawn *without replacement* from q (X_i from q_i, which is q with
  X_1..X_{i-1} removed and renormalised). With p_1 = p, X_i is accepted with probability
  min(1, p_i(X_i) / q_i(X_i)); after a rejection p_{i+1} = norm(max(p_i - q_i, 0)) and
  q_{i+1} = q_i without X_i, renormalised. If every candidate is rejected the recovered token is
  drawn from the last p_i. (A rejection needs p_i(X_i) < q_i(X_i), so p_{i+1}(X_i) = 0.)

Both are applied recursively down the draft tree: the walk moves to the accepted child and
verifies its candidates against the target distribution at that node; a node without candidates
yields a bonus token from p. Draft.q rows: for every node, the distribution its *parent's*
candidates were drawn from (siblings share the row); removal of earlier siblings is done here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from outpace.sampling import SamplingConfig, probs
from outpace.tree import children as tree_children
from outpace.types import Draft, VerifyResult
from outpace.verify import verify
from outpace.verify.chain import accepts, residual
from outpace.verify.tree import greedy_tree, walk


@dataclass(frozen=True)
class ChainsDraft(Draft):
    """SpecTr's draft: k chains sampled i.i.d. from the draft model, merged into a trie.

    ends: [k] the last node of each chain, in sampling order. The candidates of a node are the
    next tokens of the chains passing through it, in chain order and with repetitions, so that
    they are the i.i.d. sample K-SEQ needs (merging equal tokens would change the law).
    """

    ends: tuple[int, ...] = ()


# ------------------------------------------------------------------------------- SpecTr


def _kseq_h(rho: float, p_lo: float, q_hi: float, k: int) -> float:
    """rho * beta - acc on a segment where sum_x min(rho q, p) = p_lo + rho * q_hi."""
    beta = p_lo / rho + q_hi
    return rho * beta - 1.0 + (1.0 - beta) ** k


def kseq_rho(p: np.ndarray, q: np.ndarray, k: int) -> float:
    """The smallest rho in [1, k] with 1 - (1 - beta(rho))^k <= rho * beta(rho) (SpecTr, K-SEQ).

    p, q: [vocab] float64. rho * beta(rho) = sum_x min(rho q(x), p(x)) is piecewise linear with
    breakpoints at the ratios p(x)/q(x): find the segment by sorting, then bisect inside it."""
    if k <= 1:
        return 1.0
    m = q > 0
    r, pm, qm = p[m] / q[m], p[m], q[m]
    order = np.argsort(r, kind="stable")
    r, cp, cq = r[order], np.cumsum(pm[order]), np.cumsum(qm[order])
    qtot = cq[-1]
    # At rho, tokens with r <= rho give p, the others rho * q.
    def seg(rho: float) -> tuple[float, float]:
        j = int(np.searchsorted(r, rho, side="right"))
        return (float(cp[j - 1]) if j else 0.0), float(qtot - (cq[j - 1] if j else 0.0))

    if _kseq_h(1.0, *seg(1.0), k) >= 0:
        return 1.0
    inner = np.unique(r[(r > 1.0) & (r < k)])
    lo, hi = 1.0, float(k)
    if inner.size:
        j = np.searchsorted(r, inner, side="right") - 1  # >= 0: r[0] <= inner
        beta = cp[j] / inner + (qtot - cq[j])
        h = inner * beta - 1.0 + (1.0 - beta) ** k
        above = np.flatnonzero(h >= 0)
        if above.size:
            hi = float(inner[above[0]])
            lo = float(inner[above[0] - 1]) if above[0] > 0 else 1.0
        else:
            lo = float(inner[-1])
    p_lo, q_hi = seg(lo)  # constant on (lo, hi]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _kseq_h(mid, p_lo, q_hi, k) >= 0:
            hi = mid
        else:
            lo = mid
    return hi


def kseq_residual(p: np.ndarray, q: np.ndarray, rho: float, k: int) -> tuple[np.ndarray, float]:
    """(p_res, acc): SpecTr's K-SEQ residual distribution [vocab] and acceptance probability."""
    alpha = np.minimum(q, p / rho)
    beta = float(alpha.sum())
    acc = 1.0 - (1.0 - beta) ** k
    if beta <= 0.0 or acc >= 1.0:
        return p, acc  # no rejection possible, or no acceptance possible: p itself
    res = np.clip(p - alpha * (acc / beta), 0.0, None)
    total = res.sum()
    return (res / total if total > 0 else p), acc


def kseq_select(
    p: torch.Tensor,  # [vocab] target distribution at the node
    q: torch.Tensor,  # [vocab] draft distribution the candidates were drawn from (i.i.d.)
    candidates: list[int],  # [m] candidate tokens, in drawing order
    rng: torch.Generator,
) -> tuple[int | None, torch.Tensor | None]:
    """K-SEQ: (index of the accepted candidate, None) or (None, residual [vocab] to sample)."""
    p64, q64 = p.double().numpy(), q.double().numpy()
    k = len(candidates)
    rho = kseq_rho(p64, q64, k)
    for i, x in enumerate(candidates):
        u = float(torch.rand(1, generator=rng))
        if u * rho * q64[x] < p64[x]:
            return i, None
    res, _ = kseq_residual(p64, q64, rho, k)
    return None, torch.from_numpy(res).float()


def chain_candidates(parents: torch.Tensor, ends: tuple[int, ...]) -> list[list[int]]:
    """cands[0]: the root's candidate nodes, cands[i + 1]: node i's, one per chain passing
    through (chain order, repeated nodes for chains that share the token)."""
    par = parents.tolist()
    cands: list[list[int]] = [[] for _ in range(len(par) + 1)]
    for end in ends:
        path = []
        node = end
        while node >= 0:
            path.append(node)
            node = par[node]
        path.reverse()
        row = 0
        for node in path:
            cands[row].append(node)
            row = node + 1
    return cands


def spectr_tree(
    tokens: torch.Tensor,  # [n] draft tokens (the trie of the chains)
    parents: torch.Tensor,  # [n] parent index, -1 = root
    ends: tuple[int, ...],  # [k] last node of each chain
    q: torch.Tensor,  # [n, vocab] q[i]: the distribution node i was drawn from
    target_logits: torch.Tensor,  # [n + 1, vocab]
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> VerifyResult:
    """SpecTr over i.i.d. draft chains (Sun et al. 2023, section 5): at each node on the walk,
    K-SEQ selects among the next tokens of the chains that agree with the accepted prefix;
    those chains continue, the others drop out."""
    toks = tokens.tolist()

    def select(p: torch.Tensor, nodes: list[int]) -> tuple[int | None, torch.Tensor]:
        i, res = kseq_select(p, q[nodes[0]], [toks[c] for c in nodes], rng)
        return i, p if res is None else res

    return walk(probs(target_logits, sampling), chain_candidates(parents, ends), select, rng)


def spectr_verify(
    draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
) -> VerifyResult:
    """Verify a `ChainsDraft` with SpecTr (greedy tree verification at temperature 0).
    target_logits: [len(draft) + 1, vocab]."""
    if sampling.greedy:
        return greedy_tree(draft.tokens, draft.parents, target_logits)
    if draft.q is None:  # point masses (or an empty draft): the default lossless verifier
        return verify(draft, target_logits, sampling, rng)
    ends = draft.ends if isinstance(draft, ChainsDraft) else _leaves(draft.parents)
    return spectr_tree(draft.tokens, draft.parents, ends, draft.q, target_logits, sampling, rng)


def _leaves(parents: torch.Tensor) -> tuple[int, ...]:
    kids = tree_children(parents)
    return tuple(i for i in range(parents.shape[0]) if not kids[i + 1])


# ----------------------------------------------------------------- Recursive SD (RRS w/o repl.)


def recursive_rejection(
    p: torch.Tensor,  # [vocab] target distribution at the node
    q: torch.Tensor,  # [vocab] draft distribution the candidates were drawn from, w/o replacement
    candidates: list[int],  # [m] distinct candidate tokens, in drawing order
    rng: torch.Generator,
) -> tuple[int | None, torch.Tensor]:
    """Recursive rejection sampling without replacement (RSD): (accepted index or None, the
    distribution the recovered token is drawn from: the last p_i)."""
    q = q.clone()
    for i, x in enumerate(candidates):
        if accepts(p, q, x, rng):
            return i, p
        p = residual(p, q, x)
        q[x] = 0.0
        total = q.sum()
        if total > 0:
            q = q / total
    return None, p


def rsd_tree(
    tokens: torch.Tensor,  # [n] draft tokens; siblings distinct, in drawing order
    parents: torch.Tensor,  # [n] parent index, -1 = root
    q: torch.Tensor,  # [n, vocab] q[i]: the distribution node i's parent drew its children from
    target_logits: torch.Tensor,  # [n + 1, vocab]
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> VerifyResult:
    """Recursive SD's verification (Jeon et al. 2024): recursive rejection sampling without
    replacement over each node's children, walking down the accepted child. Exact when every
    node's children were drawn without replacement from q (in node order) and the decision to
    draw another child never looked at that child's token (Gumbel-top-k, stochastic beam
    search, DySpec's heap)."""
    toks = tokens.tolist()

    def select(p: torch.Tensor, nodes: list[int]) -> tuple[int | None, torch.Tensor]:
        return recursive_rejection(p, q[nodes[0]], [toks[c] for c in nodes], rng)

    return walk(probs(target_logits, sampling), tree_children(parents), select, rng)


def rsd_verify(
    draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
) -> VerifyResult:
    """Verify a tree drawn without replacement (greedy tree verification at temperature 0, where
    the tree is deterministic with distinct siblings). target_logits: [len(draft) + 1, vocab]."""
    if sampling.greedy:
        return greedy_tree(draft.tokens, draft.parents, target_logits)
    if draft.q is None:  # point masses (or an empty draft): the default lossless verifier
        return verify(draft, target_logits, sampling, rng)
    return rsd_tree(draft.tokens, draft.parents, draft.q, target_logits, sampling, rng)


__all__ = [
    "ChainsDraft",
    "chain_candidates",
    "kseq_residual",
    "kseq_rho",
    "kseq_select",
    "recursive_rejection",
    "rsd_tree",
    "rsd_verify",
    "spectr_tree",
    "spectr_verify",
]
