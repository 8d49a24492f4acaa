"""Verifier tests: hand-made greedy cases, and statistical losslessness at temperature > 0.

The statistical tests simulate decoding from a synthetic model (logits are a fixed random
function of the context) over a 5-token vocabulary, draw 6,000 two-token continuations
speculatively and compare them with the exact target distribution by chi-square (see
tests/stats.py: false-failure rate 1e-4 per test).
"""

from __future__ import annotations

import zlib
from collections import Counter
from functools import cache

import pytest
import torch
from stats import ALPHA, chi_square_pvalue

from outpace.sampling import SamplingConfig, make_rng, probs, sample
from outpace.types import Draft, VerifyResult
from outpace.verify import (
    greedy_chain,
    greedy_tree,
    specinfer_tree,
    speculative_chain,
    verify,
)
from outpace.verify.chain import accepts

V = 5
N = 6000


def one_hot_logits(ids: list[int], vocab: int = 8) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(ids), vocab).float() * 5


def test_greedy_chain_accepts_matching_prefix():
    logits = one_hot_logits([3, 4, 5, 6])  # target argmax after root, node0, node1, node2
    assert greedy_chain(torch.tensor([3, 4, 1]), logits) == VerifyResult([0, 1], 5, recovered=True)
    assert greedy_chain(torch.tensor([3, 4, 5]), logits) == VerifyResult([0, 1, 2], 6, recovered=False)
    assert greedy_chain(torch.tensor([1, 4, 5]), logits) == VerifyResult([], 3, recovered=True)
    assert greedy_chain(torch.tensor([], dtype=torch.long), logits[:1]) == VerifyResult([], 3, False)


def test_greedy_tree_follows_the_argmax_branch():
    tokens = torch.tensor([2, 3, 7, 4, 5])
    parents = torch.tensor([-1, -1, 0, 1, 1])
    # rows: root, node0 (2), node1 (3), node2, node3 (4), node4 (5)
    logits = one_hot_logits([3, 0, 5, 0, 0, 6])
    r = greedy_tree(tokens, parents, logits)
    assert r == VerifyResult([1, 4], 6, recovered=False)
    logits = one_hot_logits([3, 0, 1, 0, 0, 6])
    assert greedy_tree(tokens, parents, logits) == VerifyResult([1], 1, recovered=True)


# ----------------------------------------------------------------------- statistical tests


@cache
def _logits(kind: str, ctx: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr((kind, ctx)).encode()))  # stable across processes
    return torch.randn(V, generator=g) * 1.5


def target_probs(ctx, sampling):
    return probs(_logits("p", ctx), sampling)


def chain_draft(ctx, sampling, rng, k=2, stochastic=True) -> Draft:
    toks, qs = [], []
    for _ in range(k):
        q = probs(_logits("q", ctx + tuple(toks)), sampling)
        x = sample(q, rng) if stochastic else int(q.argmax())
        toks.append(x)
        qs.append(q)
    return Draft.chain(toks, torch.stack(qs) if stochastic else None)


def tree_draft(ctx, sampling, rng, branching=(2, 2), stochastic=True) -> Draft:
    """Each node's children: drawn i.i.d. (with replacement) from q, or the distinct top ones."""
    toks: list[int] = []
    parents: list[int] = []
    qs: list[torch.Tensor] = []
    frontier = [(-1, ctx)]
    for width in branching:
        nxt = []
        for parent, c in frontier:
            q = probs(_logits("q", c), sampling)
            picks = [sample(q, rng) for _ in range(width)] if stochastic else q.topk(width).indices.tolist()
            for x in picks:
                toks.append(x)
                parents.append(parent)
                qs.append(q)
                nxt.append((len(toks) - 1, c + (x,)))
        frontier = nxt
    return Draft(torch.tensor(toks), torch.tensor(parents), torch.stack(qs) if stochastic else None)


def node_contexts(ctx, draft: Draft) -> list[tuple[int, ...]]:
    out = [ctx]
    for tok, par in zip(draft.tokens.tolist(), draft.parents.tolist()):
        out.append(out[par + 1] + (tok,))
    return out


def spec_two_tokens(verifier, make_draft, sampling, rng) -> tuple[int, int]:
    ctx: tuple[int, ...] = (0,)
    out: list[int] = []
    while len(out) < 2:
        draft = make_draft(ctx, sampling, rng)
        logits = torch.stack([_logits("p", c) for c in node_contexts(ctx, draft)])
        toks = verifier(draft, logits, sampling, rng).emitted(draft)
        out += toks
        ctx = ctx + tuple(toks)
    return out[0], out[1]


def exact_two_tokens(sampling) -> dict[tuple[int, int], float]:
    p1 = target_probs((0,), sampling)
    return {
        (a, b): float(p1[a] * target_probs((0, a), sampling)[b]) for a in range(V) for b in range(V)
    }


def pvalue(verifier, make_draft, sampling, seed=0) -> float:
    rng = make_rng(seed)
    counts = Counter(spec_two_tokens(verifier, make_draft, sampling, rng) for _ in range(N))
    return chi_square_pvalue(counts, exact_two_tokens(sampling), N)


SETTINGS = [SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.7, top_p=0.8)]
DRAFTS = {
    "chain-sampled": lambda c, s, r: chain_draft(c, s, r, k=2),
    "chain-point-mass": lambda c, s, r: chain_draft(c, s, r, k=2, stochastic=False),
    "tree-sampled": lambda c, s, r: tree_draft(c, s, r, (2, 2)),
    "tree-point-mass": lambda c, s, r: tree_draft(c, s, r, (2, 1), stochastic=False),
}


CASES = [(d, SETTINGS[1]) for d in DRAFTS] + [("chain-sampled", SETTINGS[0]), ("tree-sampled", SETTINGS[0])]


@pytest.mark.parametrize("draft,sampling", CASES, ids=[f"{d}-{s.temperature}-{s.top_p}" for d, s in CASES])
def test_verify_is_lossless(draft, sampling):
    assert pvalue(verify, DRAFTS[draft], sampling) > ALPHA


@pytest.mark.parametrize("sampling", SETTINGS[:1], ids=["t1"])
def test_tree_verifier_on_chains_is_lossless(sampling):
    """The SpecInfer verifier must also be exact on a chain (a tree with one branch)."""

    def tree_on_chain(draft, logits, s, rng):
        return specinfer_tree(draft.tokens, draft.parents, draft.q, logits, s, rng)

    assert pvalue(tree_on_chain, DRAFTS["chain-sampled"], sampling) > ALPHA


def broken_chain(draft, logits, sampling, rng):
    """Wrong on purpose: at a rejection it samples from p instead of norm(max(p - q, 0))."""
    p = probs(logits, sampling)
    for i, x in enumerate(draft.tokens.tolist()):
        if not accepts(p[i], draft.q[i], x, rng):
            return VerifyResult(list(range(i)), sample(p[i], rng), True)
    return VerifyResult(list(range(len(draft))), sample(p[-1], rng), False)


def broken_tree(draft, logits, sampling, rng):
    """Wrong on purpose: after a rejected child it keeps p instead of the residual."""
    from outpace.tree import children

    p_all = probs(logits, sampling)
    kids, toks, path, row = children(draft.parents), draft.tokens.tolist(), [], 0
    while True:
        nxt = next((c for c in kids[row] if accepts(p_all[row], draft.q[c], toks[c], rng)), None)
        if nxt is None:
            return VerifyResult(path, sample(p_all[row], rng), bool(kids[row]))
        path.append(nxt)
        row = nxt + 1


@pytest.mark.parametrize(
    "verifier,draft", [(broken_chain, "chain-sampled"), (broken_tree, "tree-sampled")]
)
def test_the_statistical_test_catches_a_wrong_verifier(verifier, draft):
    assert pvalue(verifier, DRAFTS[draft], SETTINGS[0]) < ALPHA


def test_speculative_chain_without_draft_samples_from_p():
    rng = make_rng(3)
    sampling = SamplingConfig(temperature=1.0)
    logits = _logits("p", (0,)).view(1, V)
    counts = Counter(
        speculative_chain(torch.tensor([], dtype=torch.long), None, logits, sampling, rng).next_token
        for _ in range(N)
    )
    p = target_probs((0,), sampling)
    assert chi_square_pvalue(counts, {i: float(p[i]) for i in range(V)}, N) > ALPHA
