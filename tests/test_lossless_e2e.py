"""Statistical losslessness through the whole engine: a tiny fp32 target with an 8-token
vocabulary, sampled speculatively (a draft model's chain; a sampled tree) at temperature > 0.
The joint distribution of the first two generated tokens is compared by chi-square with the
exact one computed from the target's own logits (false-failure rate 1e-4 per test, see
tests/stats.py)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from stats import ALPHA, chi_square_pvalue

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.base import DraftContext
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.sampling import SamplingConfig, probs, sample
from outpace.types import Draft

V = 8
N = 2000
PROMPT = [1, 2, 3]


class SampledTreeDrafter:
    """Test drafter: a (2, 2) tree whose nodes are drawn i.i.d. from a fixed q."""

    name = "sampled-tree"
    makes_trees = True

    def __init__(self, q_logits: torch.Tensor) -> None:
        self.q_logits = q_logits  # [V]

    def start(self, prompt):
        pass

    def propose(self, ctx: DraftContext) -> Draft:
        q = probs(self.q_logits, ctx.sampling)
        toks = [sample(q, ctx.rng) for _ in range(6)]
        parents = torch.tensor([-1, -1, 0, 0, 1, 1])
        return Draft(torch.tensor(toks), parents, q.expand(6, V).clone())

    def observe(self, draft, result, logits):
        pass


def exact_joint(backend, sampling):
    cache = backend.new_cache()
    p1 = probs(backend.forward(cache, torch.tensor(PROMPT)).logits[-1], sampling)
    out = {}
    for a in range(V):
        c = backend.new_cache()
        p2 = probs(backend.forward(c, torch.tensor(PROMPT + [a])).logits[-1], sampling)
        for b in range(V):
            out[(a, b)] = float(p1[a] * p2[b])
    return out


def pvalue(target, drafter, sampling) -> float:
    counts: Counter = Counter()
    for seed in range(N):
        cfg = GenerationConfig(max_new_tokens=2, draft_length=6, sampling=SamplingConfig(
            sampling.temperature, sampling.top_k, sampling.top_p, seed))
        toks = Decoder(target, None, drafter).generate(PROMPT, cfg).tokens
        counts[tuple(toks)] += 1
    return chi_square_pvalue(counts, exact_joint(target, sampling), N)


def test_draft_model_chain_is_lossless_with_top_p(small_target, small_draft):
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    assert pvalue(small_target, DraftModelDrafter(small_draft), sampling) > ALPHA


def test_sampled_tree_is_lossless(small_target):
    q_logits = torch.linspace(-1.0, 1.0, V)
    assert pvalue(small_target, SampledTreeDrafter(q_logits), SamplingConfig(temperature=1.0)) > ALPHA


class GradedChainDrafter:
    """Test drafter: a deterministic chain (q None) whose grades depend on the context's last
    token, so which nodes the adaptive policy verifies changes with what was sampled before."""

    name = "graded-chain"
    makes_trees = False
    max_grade = 1

    def start(self, prompt):
        pass

    def propose(self, ctx: DraftContext) -> Draft:
        last = ctx.tokens[-1]
        toks = [(last + 1 + 2 * i) % V for i in range(ctx.budget)]
        grades = torch.tensor([(last + i) % 2 for i in range(ctx.budget)])
        return Draft.chain(toks, None, grades)

    def observe(self, draft, result, logits):
        pass


@pytest.mark.parametrize(("evidence", "costs"), [(1e9, {1: 1.0, 2: 1.6, 3: 2.2}), (2.0, {1: 1.0, 2: 1.15, 3: 1.3})],
                         ids=["settled", "thin"])
def test_cutting_deterministic_drafts_by_their_grades_is_lossless(small_target, evidence, costs):
    """The cost-aware policy verifies a node of grade 1 (accepted 95% of the time, as far as it
    knows) and drops grade 0 (5%): the verified part of each draft depends on the sampled past.
    With thin evidence the counts that each step adds, verified or cut whole
    (`observe_unverified`, judged by the sampled token), move the next step's choice too."""
    from outpace.policies import CostModel, GradeCounts

    sampling = SamplingConfig(temperature=1.0)
    decoder = Decoder(small_target, None, GradedChainDrafter(), costs=CostModel(costs, decay=1.0))
    pool = GradeCounts(proposed={0: evidence, 1: evidence}, accepted={0: 0.05 * evidence, 1: 0.95 * evidence})
    counts: Counter = Counter()
    lengths: Counter = Counter()
    for seed in range(N):
        decoder.grade_counts = GradeCounts(dict(pool.proposed), dict(pool.accepted))
        cfg = GenerationConfig(max_new_tokens=3, draft_length=2, adaptive=True,
                               sampling=SamplingConfig(1.0, seed=seed))
        r = decoder.generate(PROMPT, cfg)
        counts[tuple(r.tokens[:2])] += 1
        lengths.update(r.stats.proposed_lengths)
    assert lengths[0] and lengths[1]  # some steps verified a node, others none
    assert chi_square_pvalue(counts, exact_joint(small_target, sampling), N) > ALPHA
