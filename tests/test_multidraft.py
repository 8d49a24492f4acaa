"""Multi-draft verifiers (SpecTr's K-SEQ, Recursive SD's recursive rejection sampling without
replacement) and the tree builders that feed them (i.i.d. chains, Gumbel-top-k, stochastic beam
search, DySpec's dynamic tree).

Two kinds of losslessness checks:
- exact: at one node, the output distribution of a verifier, computed by enumerating every draw
  of the candidates (the coins integrated analytically), equals p to 1e-9. No false failures.
- statistical: a synthetic model (logits are a fixed random function of the context) over a
  5-token vocabulary; trees are built by the real builders and verified by the real verifiers,
  and the joint law of the first two generated tokens is compared with the exact target law by
  chi-square (tests/stats.py: false-failure rate ALPHA = 1e-4 per test). Each broken variant
  must fail the same test.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from functools import cache

import numpy as np
import pytest
import torch
from conftest import root_path
from stats import ALPHA, chi_square_pvalue

from outpace.drafters import draft_tree as dt
from outpace.sampling import SamplingConfig, make_rng, probs, sample
from outpace.types import Draft, VerifyResult
from outpace.verify import multidraft as md
from outpace.verify import verify

V = 5


# ------------------------------------------------------------------ exact, one node


def random_pair(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.dirichlet(np.ones(vocab) * rng.uniform(0.3, 2.0))
    q = rng.dirichlet(np.ones(vocab) * rng.uniform(0.3, 2.0))
    if rng.random() < 0.3:  # top-p style cuts: zeros on either side
        p[rng.integers(vocab)] = 0.0
        p /= p.sum()
    if rng.random() < 0.3:
        q[rng.integers(vocab)] = 0.0
        q /= q.sum()
    return p, q


def kseq_output(p: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact output law of K-SEQ with k i.i.d. candidates, by enumerating the k-tuples."""
    rho = md.kseq_rho(p, q, k)
    res, _ = md.kseq_residual(p, q, rho, k)
    a = np.minimum(1.0, np.divide(p, rho * q, out=np.ones_like(p), where=q > 0))
    out = np.zeros_like(p)
    for xs in itertools.product(np.flatnonzero(q > 0), repeat=k):
        weight, reach = np.prod(q[list(xs)]), 1.0
        for x in xs:
            out[x] += weight * reach * a[x]
            reach *= 1.0 - a[x]
        out += weight * reach * res
    return out


def rrs_output(p: np.ndarray, q: np.ndarray, k: int, update_q: bool = True, draw: np.ndarray | None = None) -> np.ndarray:
    """Exact output law of recursive rejection sampling with k candidates drawn without
    replacement from q (`draw`: the law of the next draw, default q). update_q=False is the
    classic mistake: draws without replacement, but the verifier keeps q after a rejection."""
    draw = q if draw is None else draw
    if k == 0 or draw.sum() <= 0:
        return p
    out = np.zeros_like(p)
    r = np.clip(p - q, 0.0, None)
    nxt = r / r.sum() if r.sum() > 0 else p
    for x in np.flatnonzero(draw > 0):
        a = min(1.0, p[x] / q[x])
        out[x] += draw[x] * a
        d2 = draw.copy()
        d2[x] = 0.0
        d2 = d2 / d2.sum() if d2.sum() > 0 else d2
        out += draw[x] * (1.0 - a) * rrs_output(nxt, d2 if update_q else q, k - 1, update_q, d2)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_kseq_is_exact_and_reaches_its_acceptance(k):
    rng = np.random.default_rng(k)
    for _ in range(40):
        p, q = random_pair(rng, int(rng.integers(2, 6)))
        np.testing.assert_allclose(kseq_output(p, q, k), p, atol=1e-9)
        rho = md.kseq_rho(p, q, k)
        beta = np.minimum(q, p / rho).sum()
        assert 1.0 <= rho <= k and 1 - (1 - beta) ** k <= rho * beta + 1e-12


def test_kseq_rho_is_the_smallest_valid_one():
    rng = np.random.default_rng(7)
    for _ in range(300):
        p, q = random_pair(rng, int(rng.integers(2, 30)))
        k = int(rng.integers(2, 8))
        rho = md.kseq_rho(p, q, k)
        if rho > 1.0 + 1e-9:
            smaller = rho * (1 - 1e-7)
            beta = np.minimum(q, p / smaller).sum()
            assert 1 - (1 - beta) ** k > smaller * beta  # any smaller rho is invalid


@pytest.mark.parametrize("k", [1, 2, 3])
def test_recursive_rejection_without_replacement_is_exact(k):
    rng = np.random.default_rng(10 + k)
    for _ in range(40):
        p, q = random_pair(rng, int(rng.integers(2, 6)))
        np.testing.assert_allclose(rrs_output(p, q, k), p, atol=1e-9)


def test_exact_checks_catch_the_wrong_updates():
    """Keeping q after a rejection (SpecInfer's update) is wrong for draws without replacement,
    and so is SpecInfer's residual norm(max(p - q, 0)) in place of K-SEQ's."""
    rng = np.random.default_rng(3)
    worst_rrs = worst_kseq = 0.0
    for _ in range(40):
        p, q = random_pair(rng, 4)
        worst_rrs = max(worst_rrs, np.abs(rrs_output(p, q, 2, update_q=False) - p).max())
        rho = md.kseq_rho(p, q, 3)
        r = np.clip(p - q, 0, None)
        alpha = np.minimum(q, p / rho)
        acc = 1 - (1 - alpha.sum()) ** 3
        if r.sum() > 0 and alpha.sum() > 0:
            wrong = alpha * acc / alpha.sum() + (1 - acc) * r / r.sum()
            worst_kseq = max(worst_kseq, np.abs(wrong - p).max())
    assert worst_rrs > 1e-2 and worst_kseq > 1e-2


def test_node_verifiers_sample_what_the_exact_law_says():
    """The torch implementations (kseq_select, recursive_rejection) against the exact laws."""
    rng = make_rng(0)
    p = torch.tensor([0.5, 0.2, 0.2, 0.1, 0.0])
    q = torch.tensor([0.1, 0.4, 0.1, 0.2, 0.2])
    n = 6000
    draws: dict[str, Counter] = {"kseq": Counter(), "rrs": Counter()}
    for _ in range(n):
        c = [sample(q, rng) for _ in range(3)]
        i, res = md.kseq_select(p, q, c, rng)
        draws["kseq"][c[i] if i is not None else sample(res, rng)] += 1
        c = dt.top_without_replacement(q, 3, rng)
        i, last = md.recursive_rejection(p, q, c, rng)
        draws["rrs"][c[i] if i is not None else sample(last, rng)] += 1
    expected = {x: float(p[x]) for x in range(V)}
    for name, counts in draws.items():
        assert chi_square_pvalue(counts, expected, n) > ALPHA, name


def test_gumbel_top_k_draws_without_replacement():
    """The first two Gumbel-top-k picks follow q(a) q(b) / (1 - q(a))."""
    rng = make_rng(1)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0])
    n = 8000
    counts = Counter(tuple(dt.top_without_replacement(q, 2, rng)) for _ in range(n))
    qa = q.tolist()
    expected = {(a, b): qa[a] * qa[b] / (1 - qa[a]) for a in range(V) for b in range(V) if a != b}
    assert chi_square_pvalue(counts, expected, n) > ALPHA


def test_conditional_gumbel_keeps_order_and_sets_the_max():
    gt = torch.tensor([0.3, 2.0, -1.0, 1.5], dtype=torch.float64)
    out = md_cg = dt.conditional_gumbel(0.7, gt)
    assert float(out.max()) == pytest.approx(0.7)
    assert torch.equal(out.argsort(), gt.argsort())
    expected = -torch.log(torch.exp(torch.tensor(-0.7, dtype=torch.float64)) - torch.exp(-gt.max()) + torch.exp(-gt))
    torch.testing.assert_close(md_cg, expected)


# ------------------------------------------------------------------ statistical, whole trees


@cache
def _logits(kind: str, ctx: tuple[int, ...]) -> torch.Tensor:
    # crc32, not hash(): str hashes change from process to process, and the seeded runs must not.
    g = torch.Generator().manual_seed(zlib.crc32(repr((kind, ctx)).encode()))
    return torch.randn(V, generator=g) * 1.5


def expander(ctx: tuple[int, ...], kind: str = "q") -> dt.Expand:
    """The synthetic draft model as an Expand function over a tree that continues `ctx`."""

    def expand(tokens: list[int], parents: list[int], need: list[int]) -> torch.Tensor:
        rows = [_logits(kind, ctx + root_path(tokens, parents, v)) for v in need]
        return torch.stack(rows)

    return expand


def node_contexts(ctx: tuple[int, ...], draft: Draft) -> list[tuple[int, ...]]:
    out = [ctx]
    for tok, par in zip(draft.tokens.tolist(), draft.parents.tolist()):
        out.append(out[par + 1] + (tok,))
    return out


BUILDERS = {
    "spectr": lambda c, s, r: dt.iid_chains(_logits("q", c), expander(c), 3, 2, s, r),
    "rsd-gumbel": lambda c, s, r: dt.gumbel_tree(_logits("q", c), expander(c), (2, 2), 6, s, r),
    "rsd-beam": lambda c, s, r: dt.beam_tree(_logits("q", c), expander(c), 3, 2, s, r),
    "dyspec": lambda c, s, r: dt.dynamic_tree(_logits("q", c), expander(c), 5, s, r),
}
VERIFIERS = {"spectr": md.spectr_verify, "rsd-gumbel": md.rsd_verify, "rsd-beam": md.rsd_verify, "dyspec": md.rsd_verify}


def two_tokens(build, verifier, sampling, rng, start=(0,)) -> tuple[int, int]:
    ctx: tuple[int, ...] = start
    out: list[int] = []
    while len(out) < 2:
        draft = build(ctx, sampling, rng)
        logits = torch.stack([_logits("p", c) for c in node_contexts(ctx, draft)])
        toks = verifier(draft, logits, sampling, rng).emitted(draft)
        out += toks
        ctx += tuple(toks)
    return out[0], out[1]


def exact_two_tokens(sampling, start=(0,)) -> dict[tuple[int, int], float]:
    p1 = probs(_logits("p", start), sampling)
    return {(a, b): float(p1[a] * probs(_logits("p", start + (a,)), sampling)[b]) for a in range(V) for b in range(V)}


def pvalue(build, verifier, sampling, n, seed=0, start=(0,)) -> float:
    rng = make_rng(seed)
    counts = Counter(two_tokens(build, verifier, sampling, rng, start) for _ in range(n))
    return chi_square_pvalue(counts, exact_two_tokens(sampling, start), n)


T1 = SamplingConfig(temperature=1.0)
TOP_P = SamplingConfig(temperature=0.7, top_p=0.8)
N = 1500


@pytest.mark.parametrize("method", list(BUILDERS))
def test_multidraft_is_lossless_with_top_p(method):
    assert pvalue(BUILDERS[method], VERIFIERS[method], TOP_P, N) > ALPHA


@pytest.mark.slow
@pytest.mark.parametrize("method", list(BUILDERS))
def test_multidraft_is_lossless_at_temperature_1(method):
    assert pvalue(BUILDERS[method], VERIFIERS[method], T1, 6000, seed=1) > ALPHA


_kseq_residual = md.kseq_residual


def wrong_kseq_residual(p, q, rho, k):
    """Broken on purpose: SpecInfer's residual norm(max(p - q, 0)) instead of K-SEQ's."""
    _, acc = _kseq_residual(p, q, rho, k)
    r = np.clip(p - q, 0.0, None)
    return (r / r.sum() if r.sum() > 0 else p), acc


def wrong_recursive_rejection(p, q, candidates, rng):
    """Broken on purpose: q is not updated after a rejection (draws treated as i.i.d.)."""
    from outpace.verify.chain import accepts, residual

    for i, x in enumerate(candidates):
        if accepts(p, q, x, rng):
            return i, p
        p = residual(p, q, x)
    return None, p


def specinfer_on_tree(draft, logits, sampling, rng):
    """Broken on purpose for DySpec: SpecInfer's verifier (for i.i.d. siblings) on its tree."""
    return verify(draft, logits, sampling, rng)


#: Where each mistake's error is large: the chi-square noncentrality per draw of the first token
#: there is about 0.03 (K-SEQ with SpecInfer's residual, k = 3) and 0.14 (q kept after
#: rejections, two siblings); DySpec's tree is nearly a chain at temperature 1, so its case uses
#: temperature 2, where the root has several children. p-values at these seeds: 1e-9 to 1e-35.
BROKEN = {
    "spectr": ((1,), T1),
    "rsd-gumbel": ((1,), T1),
    "dyspec": ((0, 4), SamplingConfig(temperature=2.0)),
}
N_BROKEN = 1500


@pytest.mark.parametrize("method", list(BROKEN))
def test_the_statistical_test_catches_broken_verifiers(method, monkeypatch):
    verifier = VERIFIERS[method]
    if method == "spectr":
        monkeypatch.setattr(md, "kseq_residual", wrong_kseq_residual)
    elif method == "rsd-gumbel":
        monkeypatch.setattr(md, "recursive_rejection", wrong_recursive_rejection)
    else:
        verifier = specinfer_on_tree
    start, sampling = BROKEN[method]
    assert pvalue(BUILDERS[method], verifier, sampling, N_BROKEN, start=start) < ALPHA


def test_greedy_trees_emit_the_target_argmax():
    greedy = SamplingConfig()
    best = [int(_logits("p", (0,)).argmax())]
    best.append(int(_logits("p", (0, best[0])).argmax()))
    for name, build in BUILDERS.items():
        assert two_tokens(build, VERIFIERS[name], greedy, make_rng(0)) == tuple(best), name


def test_verifiers_fall_back_for_empty_drafts():
    rng = make_rng(2)
    logits = _logits("p", (0,)).view(1, V)
    empty = Draft.empty()
    for verifier in (md.spectr_verify, md.rsd_verify):
        r = verifier(empty, logits, T1, rng)
        assert r.accepted == [] and 0 <= r.next_token < V and not r.recovered
    assert md.rsd_verify(empty, logits, SamplingConfig(), rng) == VerifyResult([], int(logits.argmax()), False)


def test_chain_candidates_keep_chain_order_and_multiplicity():
    # chains: (a, b), (a, c), (a, b) -> trie a -> {b, c}
    parents = torch.tensor([-1, 0, 0])
    cands = md.chain_candidates(parents, (1, 2, 1))
    assert cands == [[0, 0, 0], [1, 2, 1], [], []]
