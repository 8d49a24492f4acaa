"""The optimal acceptance rate of multi-draft speculative sampling at one position.

Setting (Hu et al., "Towards Optimal Multi-draft Speculative Decoding", ICLR 2025; p/q notation
of `outpace.verify`): k draft tokens S are drawn from q, either i.i.d. (*with replacement*) or
without replacement; a verifier must output Y ~ p exactly, and it *accepts* when Y is one of
the drafts. Over all couplings of S and Y (all lossless verifiers), the best acceptance is the
optimal-transport value

    alpha* = max_{pi in Pi(Q, p)} P(Y in S)                    (primal: a linear program)
           = 1 + min_{H subset of vocab} [ p(H) - Q(S subset of H) ]   (dual: max-flow/min-cut)

where Q is the law of the draft set. For both schemes the minimising H can be taken among the
prefixes of the tokens sorted by p(x)/q(x) (Hu et al.; for draws with replacement it follows
from the convexity of t -> t^k, and our tests check it against all subsets), so the dual is
computed over V + 1 sets:
- with replacement: Q(S subset of H) = q(H)^k;
- without replacement, k = 2: sum_{x in H} q(x) (q(H) - q(x)) / (1 - q(x));
- without replacement, k >= 3: an exponential race (drawing without replacement = the order in
  which independent Exp(q(x)) clocks ring), integrated over log-time by the trapezoid rule with
  a stated error estimate.
Tokens with q = 0 are never drafted and never help. `dual_brute_force` (all 2^V subsets) and
`primal_lp` (scipy's HiGHS) cross-check it on small vocabularies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from outpace.errors import OutpaceError

SCHEMES = ("with", "without")  # draft tokens drawn with or without replacement


@dataclass(frozen=True)
class Optimum:
    """alpha* and a bound on its numerical error (0 for the closed forms)."""

    value: float
    error: float = 0.0


def _check(p: np.ndarray, q: np.ndarray, k: int, scheme: str) -> None:
    if p.shape != q.shape or p.ndim != 1:
        raise OutpaceError(f"p and q must be vectors of one length, got {p.shape} and {q.shape}")
    if k < 1:
        raise OutpaceError(f"the number of drafts k must be >= 1, got {k}")
    if scheme not in SCHEMES:
        raise OutpaceError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def draft_set_law(q: np.ndarray, k: int, scheme: str) -> dict[frozenset[int], float]:
    """Law of the *set* of draft tokens (membership is all that matters): enumerates V^k draws."""
    support = [int(x) for x in np.flatnonzero(q > 0)]
    law: dict[frozenset[int], float] = {}
    if scheme == "with":
        for xs in itertools.product(support, repeat=k):
            s = frozenset(xs)
            law[s] = law.get(s, 0.0) + float(np.prod(q[list(xs)]))
        return law
    for xs in itertools.permutations(support, min(k, len(support))):
        w, left = 1.0, list(support)
        for x in xs:
            w *= q[x] / q[left].sum()  # the mass left, summed (1 - drawn would cancel badly)
            left.remove(x)
        s = frozenset(xs)
        law[s] = law.get(s, 0.0) + w
    return law


def dual_brute_force(p: np.ndarray, q: np.ndarray, k: int, scheme: str) -> float:
    """alpha* = 1 + min over all 2^V subsets H of p(H) - Q(S subset of H). Small V only."""
    _check(p, q, k, scheme)
    law = list(draft_set_law(q, k, scheme).items())
    best = 0.0
    for mask in range(1 << p.shape[0]):
        h = {x for x in range(p.shape[0]) if mask >> x & 1}
        best = min(best, float(p[list(h)].sum()) - sum(w for s, w in law if s <= h))
    return 1.0 + best


def primal_lp(p: np.ndarray, q: np.ndarray, k: int, scheme: str) -> float:
    """alpha* by linear programming (scipy's HiGHS), in the transport problem's accepted part:
    a flow pi(S, y) >= 0 on the pairs with y in S, with sum_y pi(S, y) <= Q(S) and
    sum_S pi(S, y) <= p(y), maximising the total. Any such flow extends to a full coupling of
    Q and p by pairing the left-over masses arbitrarily, and any coupling restricted to those
    pairs is such a flow, so the optimum is alpha*. (The equality-constrained coupling LP over
    all pairs has the same value but HiGHS finds it numerically infeasible when some sets have
    mass near 1e-17; this form is always feasible.)"""
    from scipy.optimize import linprog  # type: ignore[import-untyped]

    _check(p, q, k, scheme)
    sets = list(draft_set_law(q, k, scheme).items())
    pairs = [(i, y) for i, (s, _) in enumerate(sets) for y in sorted(s)]
    a_ub = np.zeros((len(sets) + p.shape[0], len(pairs)))
    for j, (i, y) in enumerate(pairs):
        a_ub[i, j] = 1.0
        a_ub[len(sets) + y, j] = 1.0
    b_ub = np.concatenate([[w for _, w in sets], p])
    tight = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    res = linprog(-np.ones(len(pairs)), A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs", options=tight)
    if not res.success:
        raise OutpaceError(f"the transport LP failed: {res.message}")
    return float(-res.fun)


def ratio_order(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Tokens with q > 0, by increasing p(x)/q(x): the candidate sets H are its prefixes."""
    support = np.flatnonzero(q > 0)
    return support[np.argsort(p[support] / q[support], kind="stable")]


def optimal_acceptance(p: np.ndarray, q: np.ndarray, k: int, scheme: str) -> Optimum:
    """alpha* through the dual, over the prefixes of `ratio_order`. p, q: [vocab] float64."""
    _check(p, q, k, scheme)
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    order = ratio_order(p, q)
    ph, qo = np.cumsum(p[order]), q[order]
    error = 0.0
    if scheme == "with" or k == 1:
        g = np.cumsum(qo) ** k
    elif order.size <= k:  # every supported token is drafted
        g = np.zeros(order.size)
        g[-1] = 1.0
    elif k == 2:
        g = pair_containment(qo)
    else:
        g, error = without_replacement_containment(qo, k)
    return Optimum(1.0 + min(0.0, float((ph - g).min())), error)


def pair_containment(qo: np.ndarray) -> np.ndarray:
    """g[j] = P(both draws without replacement fall in the first j + 1 tokens of qo):
    sum over ordered pairs x != y in the prefix of q(x) q(y) / (1 - q(x)), accumulated token by
    token from positive terms only (1 - q(x) is summed from the other tokens, not subtracted)."""
    before = np.concatenate([[0.0], np.cumsum(qo)[:-1]])  # mass of the tokens before j
    after = np.concatenate([np.cumsum(qo[::-1])[::-1][1:], [0.0]])  # mass after j
    ratio = qo / (before + after)  # q(x) / (1 - q(x))
    first = np.concatenate([[0.0], np.cumsum(ratio)[:-1]])  # sum over earlier x of q(x)/(1-q(x))
    return np.cumsum(qo * first + ratio * before)  # new pairs (x, j) and (j, y)


def without_replacement_containment(qo: np.ndarray, k: int, step: float = 0.2) -> tuple[np.ndarray, float]:
    """g[j] = P(all k draws without replacement fall in the first j + 1 tokens of qo), and an
    error estimate (trapezoid with `step` against twice `step`). qo: [n] positive, sums to 1.

    Draws without replacement are the first k clocks to ring among independent Exp(q(x)) clocks,
    so with H the prefix and T_A ~ Exp(lambda), lambda = q(rest), the clock of the rest,
        g = integral_0^inf lambda e^{-lambda s} P(at least k clocks of H rang by s) ds,
    integrated over t = log s; the count of clocks rung is updated token by token (a
    Poisson-binomial recursion), so the whole vector costs O(n k nodes)."""
    n = qo.shape[0]
    lam = np.concatenate([np.cumsum(qo[::-1])[::-1][1:], [0.0]])  # mass after each prefix
    lam_min = max(float(lam[lam > 0].min()) if (lam > 0).any() else 1.0, 1e-300)
    s = np.exp(np.arange(np.log(1e-7), np.log(50.0 / lam_min) + step, step))  # [nodes]
    counts = np.zeros((k, s.shape[0]))  # P(exactly c clocks rung by s), c < k
    counts[0] = 1.0
    g, coarse = np.zeros(n), np.zeros(n)
    for lo in range(0, n, 256):
        rung = -np.expm1(-np.outer(qo[lo : lo + 256], s))  # [block, nodes]
        weight = lam[lo : lo + 256, None] * s * np.exp(-np.outer(lam[lo : lo + 256], s))
        for b in range(rung.shape[0]):
            counts[1:] = counts[1:] * (1.0 - rung[b]) + counts[:-1] * rung[b]
            counts[0] *= 1.0 - rung[b]
            f = (1.0 - counts.sum(0)) * weight[b]  # integrand over log-time
            g[lo + b], coarse[lo + b] = step * f.sum(), 2 * step * f[::2].sum()
    full = lam <= 0.0
    g[full] = coarse[full] = (np.arange(1, n + 1) >= k)[full]
    return np.clip(g, 0.0, 1.0), float(np.abs(g - coarse).max())
