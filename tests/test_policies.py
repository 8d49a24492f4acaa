"""Cost-aware draft length: the arithmetic, and the decoder falling back to plain decoding."""

import pytest

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.errors import OutpaceError
from outpace.policies import (
    AdaptiveDraftLength,
    CostModel,
    best_draft_length,
    chain_rates,
    expected_tokens,
    measure_costs,
)


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


def test_flat_costs_favour_long_drafts_steep_costs_favour_none():
    flat = CostModel({1: 1.0, 16: 1.0})
    assert best_draft_length(chain_rates([0.8] * 8), flat, 8) == 8
    steep = CostModel({1: 1.0, 2: 2.0, 8: 8.0})  # verifying k tokens costs k single forwards
    assert best_draft_length(chain_rates([0.8] * 8), steep, 8) == 0
    # In between: with a draft cost, a middling length wins
    mid = CostModel({1: 1.0, 2: 1.1, 3: 1.25, 5: 1.6, 9: 2.6}, draft_s_per_token=0.1)
    k = best_draft_length(chain_rates([0.7] * 8), mid, 8)
    assert 1 <= k < 8


def test_policy_learns_from_acceptance_and_probes():
    costs = CostModel({1: 1.0, 2: 1.3, 5: 1.6})
    policy = AdaptiveDraftLength(costs, max_k=4, probe_every=4)
    assert policy.budget() == 3  # prior acceptance 0.6: E(3)/cost(3) = 2.18/1.5 is the best
    for _ in range(30):
        policy.observe(4, [])
    assert policy.budget() == 0  # nothing is ever accepted: decode plainly...
    assert [policy.budget() for _ in range(4)] == [0, 0, 1, 0]  # ...but probe one token now and then


def test_policy_rates_count_each_node_on_the_accepted_path():
    costs = CostModel({1: 1.0, 16: 1.0})
    policy = AdaptiveDraftLength(costs, max_k=4, prior_weight=1e-9, decay=1.0)
    policy.observe(4, [0, 1])  # chain: the first two tokens accepted
    policy.observe(4, [0, 2])  # tree: node 0 and its child 2 accepted, sibling 1 not
    policy.observe(2, [])  # nodes 2 and 3 not proposed: their rates see 2 steps only
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
    policy.observe(2, [])
    before = policy.rates()
    policy.observe(0, [])
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
