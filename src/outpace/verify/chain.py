"""Chain verification: speculative sampling of Leviathan et al. (2023, Algorithm 1) and
Chen et al. (2023, Algorithm 2). Terms and p/q notation: see `outpace.verify`."""

from __future__ import annotations

import torch

from outpace.sampling import SamplingConfig, probs, sample
from outpace.types import VerifyResult


def greedy_chain(
    tokens: torch.Tensor,  # [k] draft tokens
    target_logits: torch.Tensor,  # [k + 1, vocab]
) -> VerifyResult:
    """Temperature 0: accept draft tokens while they equal the target's argmax."""
    k = tokens.shape[0]
    best = target_logits.argmax(-1)  # [k + 1]
    mismatch = (best[:k] != tokens).nonzero()
    n = int(mismatch[0, 0]) if mismatch.numel() else k
    return VerifyResult(list(range(n)), int(best[n]), recovered=n < k)


def residual(p: torch.Tensor, q: torch.Tensor | None, token: int) -> torch.Tensor:
    """norm(max(p - q, 0)) over [vocab]; a None q is the point mass on `token`."""
    if q is None:
        r = p.clone()
        r[token] = 0.0
    else:
        r = (p - q).clamp_min_(0.0)
    total = r.sum()
    # Zero mass means p == q, where rejection has probability 0; keep p to stay well defined.
    return r / total if total > 0 else p


def accepts(p: torch.Tensor, q: torch.Tensor | None, token: int, rng: torch.Generator) -> bool:
    """The test u < p(x) / q(x), written u * q(x) < p(x) to avoid dividing by zero."""
    u = float(torch.rand(1, generator=rng))
    qx = 1.0 if q is None else float(q[token])
    return u * qx < float(p[token])


def speculative_chain(
    tokens: torch.Tensor,  # [k] draft tokens
    q: torch.Tensor | None,  # [k, vocab] draft distributions, or None for point masses
    target_logits: torch.Tensor,  # [k + 1, vocab]
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> VerifyResult:
    """Accept each draft token with probability min(1, p(x)/q(x)); at the first rejection emit a
    recovered token from norm(max(p - q, 0)); if all k are accepted emit a bonus token from p."""
    p = probs(target_logits, sampling)  # [k + 1, vocab]
    k = tokens.shape[0]
    for i in range(k):
        x = int(tokens[i])
        qi = None if q is None else q[i]
        if not accepts(p[i], qi, x, rng):
            return VerifyResult(list(range(i)), sample(residual(p[i], qi, x), rng), recovered=True)
    return VerifyResult(list(range(k)), sample(p[k], rng), recovered=False)
