"""Cost-aware draft length: the arithmetic, and the decoder falling back to plain decoding."""

import pytest
import torch

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.base import GradesNodes
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.errors import OutpaceError
from outpace.policies import (
    AdaptiveDraftLength,
    CostModel,
    GradeCounts,
    best_draft_length,
    best_head_prefix,
    best_nodes,
    chain_rates,
    expected_tokens,
    measure_costs,
    monotone_rates,
    path_rates,
)
from outpace.types import Draft


def chain(n: int) -> Draft:
    return Draft.chain(list(range(n)))


def test_expected_tokens():
    half = chain_rates([0.5, 0.5, 0.5])
    assert half == [0.5, 0.25, 0.125]
    assert expected_tokens(half, 0) == 1.0
    assert expected_tokens(half, 2) == pytest.approx(1.75)
    assert expected_tokens(chain_rates([1.0] * 4), 4) == 5.0


def test_cost_interpolation_and_extrapolation():
    c = CostModel({1: 1.0, 4: 2.5, 8: 6.5})
    assert c.verify(1) == 1.0
    assert c.verify(2) == pytest.approx(1.5)
    assert c.verify(6) == pytest.approx(4.5)
    assert c.verify(10) == pytest.approx(8.5)  # last slope, 1.0 per token


def test_live_timings_move_the_level_of_every_size_and_the_shape_of_their_own():
    c = CostModel({1: 1.0, 2: 1.5, 5: 3.0}, decay=0.5)
    for _ in range(30):
        c.observe_verify(1, 2.0)  # a longer context, or a busier machine: one token costs 2
    assert c.verify(1) == pytest.approx(2.0) and c.verify(5) == pytest.approx(6.0)  # not stale at 3
    assert c.verify(3) == pytest.approx(4.0)  # interpolated in the shape, then scaled
    for _ in range(30):
        c.observe_verify(5, 4.0)  # five tokens turn out to cost two single ones, not three
        c.observe_verify(1, 2.0)
    assert c.verify(5) / c.verify(1) == pytest.approx(2.0, rel=1e-3)
    assert c.verify(2) / c.verify(1) == pytest.approx(1.5)  # sizes not timed keep their shape
    first = CostModel({1: 1.0, 4: 2.0}, decay=0.8)
    first.observe_verify(3, 100.0)  # one outlier of a size never timed moves it a fifth of the way
    assert first.verify(3) == pytest.approx(0.8 * 5 / 3 + 0.2 * 100.0)
    fixed = CostModel({1: 1.0, 4: 2.0}, decay=1.0)
    fixed.observe_verify(1, 5.0)
    fixed.observe_verify(3, 5.0)
    assert fixed.to_json() == {"verify_s": {"1": 1.0, "3": pytest.approx(5 / 3), "4": 2.0}}


def test_flat_costs_favour_long_drafts_steep_costs_favour_none():
    flat = CostModel({1: 1.0, 16: 1.0})
    assert best_draft_length(chain_rates([0.8] * 8), flat, 8) == 8
    steep = CostModel({1: 1.0, 2: 2.0, 8: 8.0})  # verifying k tokens costs k single forwards
    assert best_draft_length(chain_rates([0.8] * 8), steep, 8) == 0
    # In between: with a draft cost, a middling length wins
    mid = CostModel({1: 1.0, 2: 1.1, 3: 1.25, 5: 1.6, 9: 2.6}, draft_s_per_token=0.1)
    k = best_draft_length(chain_rates([0.7] * 8), mid, 8)
    assert 1 <= k < 8


def test_the_first_step_after_a_prefill_drafts_only_what_beats_its_free_token():
    """Its next token comes free from the prefill's logits; m nodes cost a forward of m tokens,
    worth it when r_0 + ... + r_{m-1} > verify(m) / verify(1)."""
    cpu = CostModel({1: 1.0, 2: 1.5, 3: 2.0, 5: 3.0})
    assert best_head_prefix([0.9, 0.8, 0.7], cpu.verify, cpu.verify(1), 3) == 3  # 2.4 tokens for 2.0
    assert best_head_prefix([0.9, 0.8, 0.7], cpu.verify, cpu.verify(1), 1) == 0  # 0.9 tokens for 1.0
    assert best_head_prefix([0.6, 0.3], cpu.verify, cpu.verify(1), 2) == 0
    policy = AdaptiveDraftLength(cpu, max_k=3, probe_every=1)
    assert policy.budget() == 1 and policy.budget(after_prefill=True) == 0  # prior 0.6: r = 0.6, 0.36, 0.22
    for _ in range(30):
        policy.observe(chain(3), [0, 1, 2])
    assert policy.budget(after_prefill=True) == 3
    grading = AdaptiveDraftLength(cpu, max_k=3, probe_every=1, pooled=GradeCounts())
    weak = graded([5, 6], [-1, 0], [1, 2])  # r = 2/3, 1/2: one node pays in a later step, none here
    assert len(grading.select(weak)) == 1 and len(grading.select(weak, after_prefill=True)) == 0
    strong = graded([5, 6, 7], [-1, 0, 1], [16, 16, 16])  # r = 0.94, 0.89, 0.84
    assert len(grading.select(strong, after_prefill=True)) == 3


def test_policy_learns_from_acceptance_and_probes():
    costs = CostModel({1: 1.0, 2: 1.3, 5: 1.6})
    policy = AdaptiveDraftLength(costs, max_k=4, probe_every=4)
    assert policy.budget() == 3  # prior acceptance 0.6: E(3)/cost(3) = 2.18/1.5 is the best
    for _ in range(30):
        policy.observe(chain(4), [])
    assert policy.budget() == 0  # nothing is ever accepted: decode plainly...
    assert [policy.budget() for _ in range(4)] == [0, 0, 1, 0]  # ...but probe one token now and then


def test_policy_rates_count_each_node_on_the_accepted_path():
    costs = CostModel({1: 1.0, 16: 1.0})
    policy = AdaptiveDraftLength(costs, max_k=4, prior_weight=1e-9, decay=1.0)
    policy.observe(chain(4), [0, 1])  # chain: the first two tokens accepted
    policy.observe(Draft(torch.arange(4), torch.tensor([-1, 0, 0, 2])), [0, 2])  # tree: 0, its child 2
    policy.observe(chain(2), [])  # nodes 2 and 3 not proposed: their rates see 2 steps only
    assert policy.rates() == pytest.approx([2 / 3, 1 / 3, 1 / 2, 0.0], abs=1e-6)


def test_bad_cost_model():
    with pytest.raises(OutpaceError):
        CostModel({})
    with pytest.raises(OutpaceError):
        CostModel({0: 1.0})


def test_adaptive_decoding_stays_lossless_and_falls_back(target, draft_backend):
    prompt = [1, 2, 3, 4, 5, 1, 2, 3]
    cfg = GenerationConfig(max_new_tokens=40, draft_length=4, adaptive=True)
    ar = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=40)).tokens
    steep = CostModel({1: 1.0, 2: 2.0, 8: 8.0})
    r = Decoder(target, None, DraftModelDrafter(draft_backend), costs=steep).generate(prompt, cfg)
    assert r.tokens == ar
    # The tiny random draft is rarely right and verification is expensive: most steps are plain.
    assert sum(1 for a in r.stats.accepted_lengths if a == 0) > 0.5 * r.stats.steps
    measured = measure_costs(target, sizes=(1, 4), context=16, reps=1)
    assert set(measured.verify_s) == {1, 4}
    r2 = Decoder(target, None, DraftModelDrafter(target), costs=measured).generate(prompt, cfg)
    assert r2.tokens == ar


def test_adaptive_tree_budgets_stay_lossless_and_follow_the_costs(target, draft_backend):
    from outpace.drafters.draft_tree import DySpec, TreeDrafter
    from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter

    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    cfg = GenerationConfig(max_new_tokens=30, draft_length=6, adaptive=True)
    ar = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=30)).tokens

    def pinned(cost) -> CostModel:
        # The decoder feeds real timings into its cost model. A fresh model per run with every
        # size given and decay 1 keeps this test's costs as written: a size missing from a
        # shared model got the real (milliseconds) timing, looked 300x cheaper than the given
        # 1 s sizes, and the budget followed it (flaky under load).
        return CostModel({k: cost(k) for k in range(1, 17)}, decay=1.0)

    for drafter in (PromptLookupDrafter(PromptLookupConfig(branches=3)), TreeDrafter(draft_backend, DySpec())):
        r = Decoder(target, None, drafter, costs=pinned(float)).generate(prompt, cfg)
        assert r.tokens == ar, drafter.name
        assert max(r.stats.proposed_lengths) <= 1  # verifying costs k forwards: probes of one node at most
        r = Decoder(target, None, drafter, costs=pinned(lambda k: 1.0)).generate(prompt, cfg)
        assert r.tokens == ar, drafter.name
        assert max(r.stats.proposed_lengths) > 1  # free verification: full trees


def test_a_drafter_that_cannot_pay_even_when_always_right_is_not_started(target):
    from outpace.drafters.prompt_lookup import PromptLookupDrafter

    class Counting(PromptLookupDrafter):
        starts = 0

        def start(self, prompt):
            Counting.starts += 1
            super().start(prompt)

    costs = CostModel({1: 1.0, 2: 1.5, 5: 2.5}, draft_s_per_token=1.0)  # drafting a token costs a forward
    assert AdaptiveDraftLength(costs, max_k=4).hopeless()
    assert not AdaptiveDraftLength(CostModel({1: 1.0, 2: 1.5, 5: 2.5}), max_k=4).hopeless()  # draft cost unknown
    prompt = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    ar = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=20)).tokens
    r = Decoder(target, None, Counting(), costs=costs).generate(prompt, GenerationConfig(20, adaptive=True))
    assert r.tokens == ar and Counting.starts == 0 and set(r.stats.proposed_lengths) == {0}


def test_steps_without_a_draft_keep_the_evidence():
    policy = AdaptiveDraftLength(CostModel({1: 1.0, 2: 1.3}), max_k=2)
    policy.observe(chain(2), [])
    before = policy.rates()
    policy.observe(Draft.empty(), [])
    assert policy.rates() == before


def test_adaptive_needs_a_cost_model(target, draft_backend):
    cfg = GenerationConfig(max_new_tokens=4, adaptive=True)
    with pytest.raises(OutpaceError, match="cost model"):
        Decoder(target, None, DraftModelDrafter(draft_backend)).generate([1, 2], cfg)


def test_draft_cost_is_unknown_until_the_first_draft_step_then_smoothed() -> None:
    costs = CostModel({1: 1.0, 2: 1.2})
    assert costs.draft(3) == 0.0
    costs.observe_draft(4, 0.4)
    assert costs.draft_s_per_token == pytest.approx(0.1)  # the first timing is taken whole
    costs.observe_draft(1, 0.2)
    assert costs.draft_s_per_token == pytest.approx(0.8 * 0.1 + 0.2 * 0.2)
    # an expensive drafter makes the policy stop drafting even at perfect acceptance
    costs.observe_draft(1, 10.0)
    assert best_draft_length([1.0] * 4, costs, 4) == 0


# ---------------------------------------------------------------------------- graded drafts


def graded(tokens: list[int], parents: list[int], grades: list[int], q: torch.Tensor | None = None) -> Draft:
    return Draft(torch.tensor(tokens), torch.tensor(parents), q, torch.tensor(grades))


def test_path_rates_multiply_along_the_path_and_best_nodes_follow_the_costs():
    parents, cond = [-1, 0, -1, 1], [0.9, 0.9, 0.3, 0.9]
    assert path_rates(parents, cond) == pytest.approx([0.9, 0.81, 0.3, 0.729])
    flat = CostModel({1: 1.0, 16: 1.0})
    assert best_nodes(parents, cond, flat, 3) == [0, 1, 3]  # the three likeliest, as a tree
    assert best_nodes(parents, cond, flat, 8) == [0, 1, 2, 3]
    steep = CostModel({1: 1.0, 2: 2.0, 8: 8.0})
    assert best_nodes(parents, cond, steep, 4) == []
    cpu = CostModel({1: 1.0, 2: 1.6, 3: 2.2, 5: 2.8})  # the shape measured with llama.cpp here
    assert best_nodes(parents, cond, cpu, 4) == [0, 1, 3]  # E(3) = 3.44 for 2.5: 1.38 tokens per unit
    assert best_nodes([-1, 0], [0.3, 1.0], cpu, 4) == []  # a weak first node sinks its child


def test_best_nodes_always_keep_a_tree():
    gen = torch.Generator().manual_seed(0)
    costs = CostModel({1: 1.0, 2: 1.2, 4: 1.5, 8: 2.5})
    for _ in range(200):
        n = int(torch.randint(1, 10, (1,), generator=gen))
        parents = [int(torch.randint(-1, v, (1,), generator=gen)) if v else -1 for v in range(n)]
        cond = [float(x) for x in torch.rand(n, generator=gen).round(decimals=1)]  # ties happen
        keep = best_nodes(parents, cond, costs, 6)
        assert len(keep) <= 6 and all(parents[v] < 0 or parents[v] in keep for v in keep)


def test_subtree_renumbers_nodes_and_keeps_their_rows():
    q = torch.eye(4)  # [num_nodes, vocab]: row i marks node i
    draft = graded([5, 6, 7, 8], [-1, -1, 0, 2], [1, 2, 3, 4], q=q)
    sub = draft.subtree([0, 2, 3])
    assert sub.tokens.tolist() == [5, 7, 8] and sub.parents.tolist() == [-1, 0, 1]
    assert sub.grades.tolist() == [1, 3, 4] and torch.equal(sub.q, q[[0, 2, 3]])
    assert len(draft.subtree([])) == 0 and draft.subtree([]).q.shape == (0, q.shape[1])
    assert draft.subtree([]).grades.tolist() == [] and draft.subtree(list(range(len(draft)))) is draft
    with pytest.raises(ValueError, match="drops the parent"):
        draft.subtree([0, 3])  # node 3's parent is node 2


def test_grade_counts_forget_beyond_their_memory():
    counts = GradeCounts(memory=10.0)
    for _ in range(10):
        counts.add(3, True)
    for _ in range(10):
        counts.add(3, False)
    assert counts.proposed[3] == 10.0 and counts.accepted[3] < 4.0  # the old successes faded
    assert counts.rate(3, 1.0, 2.0) == pytest.approx((counts.accepted[3] + 2.0) / 12.0)
    assert counts.rate(7, 0.5, 2.0) == 0.5  # an unseen grade: the prior


def test_graded_policy_verifies_the_grades_that_pay_and_watches_the_rest_for_free():
    costs = CostModel({1: 1.0, 2: 1.6, 3: 2.2, 5: 2.8}, decay=1.0)
    pooled = GradeCounts()
    policy = AdaptiveDraftLength(costs, max_k=4, probe_every=4, pooled=pooled)  # probe_every: ignored when graded
    assert policy.budget() == 4  # graded: draft everything, select what pays
    weak, strong = graded([5, 6, 7, 8], [-1, 0, 1, 2], [1, 2, 3, 4]), graded([5, 6], [-1, 0], [3, 4])
    # Every grade is new: c_g = (g + 1) / (g + 2), so r = 2/3, 1/2, 2/5, 1/3 down the chain;
    # E(m) / verify(m + 1) = 1.67/1.6 for one node beats 2.9/2.8 for all four.
    assert policy.grade_rate(1) == pytest.approx(2 / 3) and policy.grade_rate(16) == pytest.approx(17 / 18)
    assert policy.select(weak).tokens.tolist() == [5]
    cheap = AdaptiveDraftLength(CostModel({1: 1.0, 5: 1.2}, decay=1.0), max_k=4, pooled=GradeCounts())
    assert len(cheap.select(weak)) == 4  # where verifying is nearly free, the whole chain is tried
    for _ in range(20):
        policy.observe(weak.subtree([0]), [])  # grade 1 never accepted
        policy.observe(strong, [0, 1])  # grades 3 and 4 always
    assert policy.grade_rate(1) < 0.2 and policy.grade_rate(3) > 0.9
    assert [len(policy.select(weak)) for _ in range(20)] == [0] * 20  # no probes: nothing verified
    assert policy.select(strong).tokens.tolist() == [5, 6]
    later = AdaptiveDraftLength(costs, max_k=4, pooled=pooled)  # the next request starts from the pool
    assert len(later.select(weak)) == 0 and len(later.select(strong)) == 2
    # A cut draft is still evidence: its first node against the token the step committed.
    for _ in range(30):
        later.observe_unverified(weak, 5)
    assert later.grade_rate(1) > 0.8 and later.select(weak).tokens.tolist()[:1] == [5]
    later.observe_unverified(weak, 9)
    assert 2 not in pooled.proposed  # only root children count: no parent of a deeper node was accepted


def test_unverified_drafts_count_only_when_deterministic_and_graded():
    policy = AdaptiveDraftLength(CostModel({1: 1.0, 2: 2.0}), max_k=4, pooled=GradeCounts())
    policy.observe_unverified(graded([1, 2], [-1, 0], [0, 0], q=torch.full((2, 4), 0.25)), 1)
    policy.observe_unverified(chain(2), 0)
    assert not policy.pooled.proposed and not policy.graded.proposed
    policy.observe_unverified(graded([1, 2, 3], [-1, -1, 0], [2, 5, 9]), 2)  # a tree: two root children
    assert policy.graded.proposed == {2: 1.0, 5: 1.0} and policy.graded.accepted == {2: 0.0, 5: 1.0}


def test_monotone_rates_pool_the_grades_that_break_the_order():
    assert monotone_rates([0.1, 0.5, 0.9], [1, 1, 1]) == [0.1, 0.5, 0.9]
    assert monotone_rates([0.9, 0.3], [3, 1]) == pytest.approx([0.75, 0.75])
    assert monotone_rates([0.2, 0.9, 0.5, 0.4, 0.95], [1, 2, 1, 1, 1]) == pytest.approx([0.2, 0.675, 0.675, 0.675, 0.95])
    assert monotone_rates([], []) == []


def test_a_thinly_evidenced_grade_below_the_grades_under_it_is_tried_again():
    """Three early failures of grade 5 would cut every chain after its grade-4 node for good;
    ordered grades let grade 4's evidence carry it until its own says otherwise."""
    pooled = GradeCounts(proposed={4: 50.0, 5: 3.0}, accepted={4: 48.0, 5: 0.0})
    policy = AdaptiveDraftLength(CostModel({1: 1.0, 2: 1.6, 3: 2.0}, decay=1.0), max_k=2, pooled=pooled)
    assert policy.grade_rate(5) < 0.4
    assert policy.grade_rates(5)[5] == pytest.approx(policy.grade_rates(5)[4]) and policy.grade_rates(5)[5] > 0.85
    assert len(policy.select(graded([7, 8], [-1, 0], [4, 5]))) == 2


def test_only_deterministic_graded_drafts_are_cut():
    policy = AdaptiveDraftLength(CostModel({1: 1.0, 2: 2.0, 8: 8.0}), max_k=4, pooled=GradeCounts())
    sampled = graded([1, 2], [-1, 0], [0, 0], q=torch.full((2, 4), 0.25))
    assert policy.select(sampled) is sampled  # cutting a sampled draft by what was drawn is lossy
    whole = chain(3)
    assert policy.select(whole) is whole  # no grades: kept whole
    assert len(policy.select(graded([1, 2], [-1, 0], [0, 0]))) == 0  # costs k forwards: nothing pays


@pytest.mark.parametrize("name", ["prompt-lookup", "rest"])
def test_graded_drafters_stay_lossless_and_pool_their_grades(target, name):
    from outpace.drafters.prompt_lookup import PromptLookupDrafter
    from outpace.drafters.rest import ContextRetriever, RestDrafter

    drafter = PromptLookupDrafter() if name == "prompt-lookup" else RestDrafter(ContextRetriever(16))
    assert isinstance(drafter, GradesNodes)
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    cfg = GenerationConfig(max_new_tokens=30, draft_length=4, adaptive=True)
    ar = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=30)).tokens
    decoder = Decoder(target, None, drafter, costs=CostModel({1: 1.0, 2: 1.3, 5: 1.6}, decay=1.0))
    for _ in range(2):
        r = decoder.generate(prompt, cfg)
        assert r.tokens == ar
    assert decoder.grade_counts.proposed  # the second request started from the first one's counts


def test_drafts_cut_whole_still_feed_the_pooled_grades(target):
    from outpace.drafters.prompt_lookup import PromptLookupDrafter

    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    cfg = GenerationConfig(max_new_tokens=20, draft_length=4, adaptive=True)
    ar = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=20)).tokens
    decoder = Decoder(target, None, PromptLookupDrafter(), costs=CostModel({1: 1.0, 2: 50.0}, decay=1.0))
    r = decoder.generate(prompt, cfg)
    assert r.tokens == ar and not any(r.stats.proposed_lengths)  # nothing can pay: nothing verified
    counts = decoder.grade_counts
    assert sum(counts.proposed.values()) > 0  # yet every step's draft was judged by its next token
    assert sum(counts.accepted.values()) <= sum(counts.proposed.values())
