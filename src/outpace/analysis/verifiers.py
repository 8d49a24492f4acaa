"""Acceptance rates the implemented multi-draft verifiers reach at one position (k drafts, one
tree level), to set against the optimum of `outpace.analysis.optimal`. p/q notation of
`outpace.verify`; acceptance = P(the output token is one of the drafts).

- SpecInfer (`outpace.verify.tree.specinfer_tree`) on i.i.d. drafts: each rejection replaces p
  by norm(max(p - q, 0)) whatever the token, so acceptance = 1 - prod_i (1 - sum min(p_i, q)).
- SpecTr's K-SEQ (`outpace.verify.multidraft.kseq_select`) on i.i.d. drafts:
  1 - (1 - beta(rho*))^k (Sun et al. 2023).
- Recursive SD (`outpace.verify.multidraft.recursive_rejection`) on drafts without replacement:
  the residual q_i depends on the tokens drawn, so it is computed exactly by recursion over the
  draws when the support is small, otherwise estimated by Monte Carlo over the draws (the accept
  coins integrated out) with its standard error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from outpace.verify.multidraft import kseq_residual, kseq_rho

#: verifier -> the draft scheme it is lossless for
VERIFIERS = {"specinfer": "with", "spectr": "with", "rsd": "without"}


@dataclass(frozen=True)
class Estimate:
    """An acceptance rate; error is a standard error (Monte Carlo) or 0 (exact)."""

    value: float
    error: float = 0.0
    exact: bool = True


def _residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r = np.clip(p - q, 0.0, None)
    total = r.sum()
    return r / total if total > 0 else p


def specinfer_acceptance(p: np.ndarray, q: np.ndarray, k: int) -> Estimate:
    """SpecInfer's recursive rejection sampling on k i.i.d. drafts (exact)."""
    reach, acc = 1.0, 0.0
    for _ in range(k):
        beta = float(np.minimum(p, q).sum())
        acc += reach * beta
        reach *= 1.0 - beta
        p = _residual(p, q)
    return Estimate(acc)


def spectr_acceptance(p: np.ndarray, q: np.ndarray, k: int) -> Estimate:
    """SpecTr's K-SEQ on k i.i.d. drafts (exact)."""
    _, acc = kseq_residual(p, q, kseq_rho(p, q, k), k)
    return Estimate(acc)


def _rsd_exact(p: np.ndarray, q: np.ndarray, k: int) -> float:
    if k == 0 or q.sum() <= 0:
        return 0.0
    nxt = _residual(p, q)
    total = 0.0
    for x in np.flatnonzero(q > 0):
        a = min(1.0, p[x] / q[x])
        rest = q.copy()
        rest[x] = 0.0
        rest = rest / rest.sum() if rest.sum() > 0 else rest
        total += q[x] * (a + (1.0 - a) * _rsd_exact(nxt, rest, k - 1))
    return total


def _rsd_monte_carlo(p: np.ndarray, q: np.ndarray, k: int, samples: int, rng: torch.Generator) -> Estimate:
    """Average over draws without replacement (Gumbel-top-k) of P(accept | draws)."""
    pt, qt = torch.from_numpy(p), torch.from_numpy(q)
    k = min(k, int((qt > 0).sum()))
    out = []
    for lo in range(0, samples, 64):
        b = min(64, samples - lo)
        u = torch.rand(b, qt.shape[0], generator=rng, dtype=torch.float64).clamp_min_(1e-300)
        draws = (qt.log() - torch.log(-torch.log(u))).topk(k, dim=1).indices  # [b, k]
        pi, qi = pt.expand(b, -1).clone(), qt.expand(b, -1).clone()
        reach, acc = torch.ones(b, dtype=torch.float64), torch.zeros(b, dtype=torch.float64)
        for i in range(k):
            x = draws[:, i : i + 1]
            a = (pi.gather(1, x) / qi.gather(1, x)).clamp(max=1.0).squeeze(1)
            acc += reach * a
            reach *= 1.0 - a
            r = (pi - qi).clamp_min(0.0)
            mass = r.sum(1, keepdim=True)
            pi = torch.where(mass > 0, r / mass.clamp_min(1e-300), pi)
            qi.scatter_(1, x, 0.0)
            qi = qi / qi.sum(1, keepdim=True).clamp_min(1e-300)
        out.append(acc)
    vals = torch.cat(out)
    return Estimate(float(vals.mean()), float(vals.std() / max(1, samples) ** 0.5), exact=False)


def rsd_acceptance(
    p: np.ndarray, q: np.ndarray, k: int, rng: torch.Generator, samples: int = 2000, exact_limit: int = 50_000
) -> Estimate:
    """Recursive SD's rejection sampling on k drafts without replacement: exact when the number
    of draw sequences (support^k) is at most `exact_limit`, else Monte Carlo."""
    support = int((q > 0).sum())
    if support ** min(k, support) <= exact_limit:
        return Estimate(_rsd_exact(p, q, k))
    return _rsd_monte_carlo(p, q, k, samples, rng)


def acceptance(verifier: str, p: np.ndarray, q: np.ndarray, k: int, rng: torch.Generator, samples: int = 2000) -> Estimate:
    """The acceptance `verifier` (a key of VERIFIERS) reaches with k drafts of its scheme."""
    if verifier == "specinfer":
        return specinfer_acceptance(p, q, k)
    if verifier == "spectr":
        return spectr_acceptance(p, q, k)
    return rsd_acceptance(p, q, k, rng, samples)
