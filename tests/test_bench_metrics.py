"""The benchmark's metrics on hand-made records: speedup, tau, exactness, spread, time split,
cost-profile interpolation and projection."""

from __future__ import annotations

import dataclasses

import pytest

from outpace.bench.costs import CostProfile, interpolate
from outpace.bench.methods import proposals_from_depths
from outpace.bench.metrics import (
    accepted_histogram,
    exactness,
    first_difference,
    projected_speedup,
    prompt_speeds,
    speedups,
    spread,
    step_economics,
    tau,
    time_split,
)
from outpace.bench.records import TurnRecord
from outpace.errors import OutpaceError


def rec(method="ar", qid="1", turn=1, repeat=0, tokens=(1, 2, 3, 4), wall=1.0, task="qa", steps=None,
        proposed=None, times=None) -> TurnRecord:
    """A record; `steps` are accepted lengths per step, `times` (prefill, draft, verify, other)."""
    t = times or (None, None, None, None)
    prefill, draft, verify, other = t
    return TurnRecord(method=method, question_id=qid, task=task, category=task, turn=turn, repeat=repeat,
                      prompt_tokens=10, new_tokens=len(tokens), wall_s=wall, finish_reason="length", text="",
                      tokens=tuple(tokens), steps=None if steps is None else len(steps),
                      accepted_lengths=None if steps is None else tuple(steps),
                      proposed_lengths=None if proposed is None else tuple(proposed),
                      proposed_exact=True if proposed else None,
                      prefill_s=prefill, draft_s=draft, verify_s=verify, other_s=other)


def test_prompt_speed_sums_turns_before_dividing() -> None:
    # 4 tokens in 1 s + 8 tokens in 3 s = 12 tokens / 4 s = 3 tok/s (not the mean of 4 and 2.67)
    recs = [rec(turn=1, tokens=(1,) * 4, wall=1.0), rec(turn=2, tokens=(1,) * 8, wall=3.0)]
    assert prompt_speeds(recs) == {("1", 0): pytest.approx(3.0)}


def test_speedup_is_ratio_of_mean_prompt_speeds() -> None:
    base = [rec("ar", "1", wall=2.0), rec("ar", "2", wall=1.0)]  # 2 and 4 tok/s: mean 3
    fast = [rec("m", "1", wall=1.0), rec("m", "2", wall=0.5)]  # 4 and 8 tok/s: mean 6
    assert speedups(fast, base) == [pytest.approx(2.0)]


def test_speedup_uses_only_turns_both_methods_ran() -> None:
    base = [rec("ar", "1", wall=1.0), rec("ar", "2", wall=4.0)]
    half_done = [rec("m", "1", wall=0.5)]  # prompt 2 not run yet: compare on prompt 1 only
    assert speedups(half_done, base) == [pytest.approx(2.0)]


def test_speedup_per_repeat_and_its_spread() -> None:
    base = [rec("ar", "1", repeat=r, wall=1.0) for r in range(3)]
    m = [rec("m", "1", repeat=r, wall=w) for r, w in enumerate([0.5, 0.25, 1.0])]
    values = speedups(m, base)
    assert values == [pytest.approx(2.0), pytest.approx(4.0), pytest.approx(1.0)]
    s = spread(values)
    assert (s.median, s.lo, s.hi, s.n) == (pytest.approx(2.0), pytest.approx(1.0), pytest.approx(4.0), 3)
    assert spread([]) is None


def test_tau_pools_all_steps() -> None:
    # steps accepted 3, 0 | 1: committed 4 + 1 + 2 = 7 tokens over 3 steps
    recs = [rec(steps=[3, 0]), rec(qid="2", steps=[1])]
    assert tau(recs) == pytest.approx(7 / 3)
    assert tau([rec()]) is None  # a peer: no steps
    assert accepted_histogram(recs) == {3: 1, 0: 1, 1: 1}


def test_exactness_counts_identical_turns_and_where_others_diverge() -> None:
    ref = [rec("ar", "1", tokens=(1, 2, 3)), rec("ar", "2", tokens=(4, 5, 6)), rec("ar", "3", tokens=(7, 8))]
    out = [rec("m", "1", tokens=(1, 2, 3)), rec("m", "2", tokens=(4, 9, 6)), rec("m", "3", tokens=(7, 8, 9)),
           rec("m", "4", tokens=(1,))]  # prompt 4 has no reference turn: not counted
    e = exactness(out, ref)
    assert (e.matched, e.total, e.divergences) == (1, 3, (1, 2))
    assert e.fraction == pytest.approx(1 / 3)
    assert exactness(out, []) is None


def test_exactness_compares_the_same_repeat() -> None:
    ref = [rec("ar", tokens=(1, 2), repeat=0), rec("ar", tokens=(1, 3), repeat=1)]
    out = [rec("m", tokens=(1, 2), repeat=0), rec("m", tokens=(1, 2), repeat=1)]
    assert exactness(out, ref).matched == 1


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_time_split_shares_and_untracked_time() -> None:
    recs = [rec(wall=2.0, times=(0.2, 0.3, 1.0, 0.1)), rec(qid="2", wall=2.0, times=(0.2, 0.3, 1.0, 0.1))]
    s = time_split(recs)
    assert (s.prefill, s.draft, s.verify, s.other, s.wall) == pytest.approx((0.4, 0.6, 2.0, 0.2, 4.0))
    assert s.untracked == pytest.approx(0.8)
    assert s.shares()["verify"] == pytest.approx(0.5)
    assert time_split([rec()]) is None


def test_step_economics_splits_decode_speedup_into_tau_and_step_cost() -> None:
    # ar: 4 steps of one token, 0.1 s each; m: 2 steps committing 2 tokens each, 0.05 s draft +
    # 0.1 s verify + 0.01 s other per step -> step cost 1.6 ar steps, tau 2, decode speedup 1.25.
    ar = [rec("ar", steps=[0, 0, 0, 0], times=(0.5, 0.0, 0.4, 0.0)), rec("ar", qid="2", steps=[0], times=(9, 0, 9, 0))]
    m = [rec("m", steps=[1, 1], proposed=[2, 2], times=(0.5, 0.1, 0.2, 0.02))]
    e = step_economics(m, ar)  # ar's second prompt is not in m's records: left out
    assert (e.tau, e.step_cost, e.decode_speedup) == pytest.approx((2.0, 1.6, 1.25))
    slow = step_economics([rec("m", steps=[0, 0], proposed=[3, 3], times=(0.5, 0.0, 0.6, 0.0))], ar)
    assert slow.decode_speedup == pytest.approx(1 / 3)  # nothing accepted at 3 ar steps per step
    assert step_economics([rec("hf-assisted")], ar) is None  # a peer has no step accounting
    assert step_economics(m, [rec("ar", qid="9", steps=[0], times=(0, 0, 1, 0))]) is None  # no common turn


def test_economics_section_per_task_and_overall() -> None:
    from outpace.bench.report import economics_section

    recs = [rec("ar", "1", task="qa", steps=[0, 0], times=(0, 0, 0.2, 0)),
            rec("ar", "2", task="rag", steps=[0, 0], times=(0, 0, 0.2, 0)),
            rec("m", "1", task="qa", steps=[3], proposed=[3], times=(0, 0, 0.2, 0)),  # 4 tokens for 2 steps' time
            rec("m", "2", task="rag", steps=[0], proposed=[3], times=(0, 0, 0.2, 0)),  # 1 token for 2
            rec("llama-cpp-ar", "1", task="qa")]
    text = "\n".join(economics_section(recs, ["ar", "m", "llama-cpp-ar"], "ar", ["qa", "rag"]))
    assert "| `m` | 2.00x (4.00 / 2.00) | 0.50x (1.00 / 2.00) | 1.25x (2.50 / 2.00) |" in text
    assert "`ar` |" not in text and "llama-cpp-ar` |" not in text
    assert economics_section(recs[:2], ["ar"], "ar", ["qa", "rag"]) == []


def test_interpolation_between_below_and_beyond_given_points() -> None:
    pts = ((1, 10.0), (4, 16.0), (8, 40.0))
    assert interpolate(pts, 1) == 10.0
    assert interpolate(pts, 2) == pytest.approx(12.0)
    assert interpolate(pts, 6) == pytest.approx(28.0)
    assert interpolate(pts, 12) == pytest.approx(64.0)  # extends the 4..8 line
    assert interpolate(((2, 7.0),), 1) == interpolate(((2, 7.0),), 9) == 7.0


def test_cost_profile_parsing_and_validation() -> None:
    p = CostProfile.from_json({"name": "g", "verify_ms": {"1": 20, "16": 20}, "draft_ms_per_token": 2})
    assert p.ar_ms == 20 and p.verify_cost(9) == 20 and p.to_json()["verify_ms"] == {"1": 20.0, "16": 20.0}
    with pytest.raises(OutpaceError, match="lacks 'verify_ms'"):
        CostProfile.from_json({"ar_ms": 1})
    with pytest.raises(OutpaceError, match="finite number >= 0"):
        CostProfile.from_json({"verify_ms": {"1": -1}})
    with pytest.raises(OutpaceError, match="bad number"):
        CostProfile.from_json({"verify_ms": {"one": 1}})


def test_projection_charges_each_step_its_profile_cost() -> None:
    profile = CostProfile.from_json({"verify_ms": {"1": 20, "5": 30}, "draft_ms_per_token": 2, "ar_ms": 20})
    # two steps: 4 proposed, 3 accepted (4 tokens); 4 proposed, 0 accepted (1 token)
    r = rec("draft-model:x", steps=[3, 0], proposed=[4, 4])
    # time: 2 * (4 * 2 + verify(5) = 30) = 76 ms; AR: 5 tokens * 20 ms = 100 ms
    assert projected_speedup([r], profile, draft_is_model=True) == pytest.approx(100 / 76)
    assert projected_speedup([r], profile, draft_is_model=False) == pytest.approx(100 / 60)
    ar = rec("ar", steps=[0, 0, 0], proposed=[0, 0, 0])
    assert projected_speedup([ar], profile, draft_is_model=False) == pytest.approx(1.0)
    assert projected_speedup([rec("hf-ar")], profile, draft_is_model=False) is None


def test_proposals_recovered_from_depth_counts() -> None:
    # 5 steps proposing 4, 4, 2, 0, 1 tokens: proposed_at = steps with depth > i
    assert sorted(proposals_from_depths([4, 3, 2, 2], 5)) == [0, 1, 2, 4, 4]
    assert proposals_from_depths([], 3) == [0, 0, 0]


def test_records_round_trip_and_reject_inconsistent_counts() -> None:
    r = rec(steps=[1, 2], proposed=[4, 4], times=(0.1, 0.2, 0.3, 0.4))
    assert TurnRecord.from_json(r.to_json()) == r
    assert r.to_json()["tokens_per_s"] == 4.0
    with pytest.raises(OutpaceError, match="new_tokens"):
        TurnRecord(method="ar", question_id="1", task="qa", category="qa", turn=1, repeat=0, prompt_tokens=3,
                   new_tokens=5, wall_s=1.0, finish_reason="eos", text="", tokens=(1, 2))
    with pytest.raises(OutpaceError, match="lacks"):
        TurnRecord.from_json({"method": "ar"})


def test_peer_comparison_per_task_overall_and_best_method() -> None:
    from outpace.bench.config import RunConfig
    from outpace.bench.report import peer_comparisons, peer_section

    config = RunConfig(target="t", methods=("ar", "m", "llama-cpp-ar", "hf-assisted"))
    recs = [rec("llama-cpp-ar", "1", task="qa", wall=1.0), rec("llama-cpp-ar", "2", task="rag", wall=1.0),
            rec("hf-assisted", "1", task="qa", wall=4.0), rec("hf-assisted", "2", task="rag", wall=4.0),
            rec("ar", "1", task="qa", wall=1.0), rec("ar", "2", task="rag", wall=1.0),
            rec("m", "1", task="qa", wall=0.5), rec("m", "2", task="rag", wall=2.0)]  # 2x on qa, 0.5x on rag
    lcpp, hf = peer_comparisons(config, recs)
    assert (lcpp.peer, hf.peer) == ("llama-cpp-ar", "hf-assisted")
    assert set(lcpp.overall) == {"ar", "m"}  # peers are not compared with peers
    assert lcpp.task_speedups["m"]["qa"].median == pytest.approx(2.0)
    assert lcpp.task_speedups["m"]["rag"].median == pytest.approx(0.5)
    assert lcpp.overall["m"].median == pytest.approx(1.25)  # mean of 8 and 2 tok/s over mean of 4
    assert hf.overall["ar"].median == pytest.approx(4.0)
    text = "\n".join(peer_section([lcpp, hf], ["qa", "rag"]))
    assert "against `llama-cpp-ar`: `m`, 1.25x (faster than `llama-cpp-ar`)" in text
    assert "against `hf-assisted`: `m`, 5.00x (faster than `hf-assisted`)" in text
    assert "| `ar` | 1.00x | 1.00x | 1.00x | 4.00x |" in text


def test_peer_comparison_on_turns_of_equal_length() -> None:
    """Prompt 2's answers diverge: 2 tokens for `m` against 8 for the peer, which makes `m` read
    slower there (prefill counted) although both decode at one token per 0.25 s."""
    from outpace.bench.config import RunConfig
    from outpace.bench.metrics import equal_length
    from outpace.bench.report import peer_comparisons, peer_section

    config = RunConfig(target="t", methods=("ar", "m", "llama-cpp-ar"))
    recs = [rec("llama-cpp-ar", "1", wall=1.0), rec("llama-cpp-ar", "2", tokens=(1,) * 8, wall=2.5),
            rec("ar", "1", wall=1.0), rec("ar", "2", tokens=(1,) * 8, wall=2.5),
            rec("m", "1", wall=0.5), rec("m", "2", tokens=(1, 2), wall=1.0)]
    mine, peer = equal_length([r for r in recs if r.method == "m"], [r for r in recs if r.method == "llama-cpp-ar"])
    assert [r.question_id for r in mine] == [r.question_id for r in peer] == ["1"]
    (lcpp,) = peer_comparisons(config, recs)
    assert lcpp.overall["m"].median == pytest.approx((8 + 2) / (4 + 3.2))  # every turn both ran
    assert lcpp.equal_overall["m"].median == pytest.approx(2.0) and lcpp.equal_turns["m"] == (1, 2)
    assert lcpp.equal_overall["ar"].median == pytest.approx(1.0) and lcpp.equal_turns["ar"] == (2, 2)
    text = "\n".join(peer_section([lcpp], ["qa"]))
    assert "as many new tokens" in text and "| `m` | 2.00x | 2.00x | 1/2 |" in text
    same = [r for r in recs if r.question_id == "1"]
    assert "as many new tokens" not in "\n".join(peer_section(peer_comparisons(config, same), ["qa"]))


def test_peer_comparison_says_plainly_when_slower() -> None:
    from outpace.bench.config import RunConfig
    from outpace.bench.report import peer_comparisons, peer_section

    config = RunConfig(target="t", methods=("ar", "llama-cpp-ar"))
    recs = [rec("llama-cpp-ar", "1", wall=1.0), rec("ar", "1", wall=1.25)]
    text = "\n".join(peer_section(peer_comparisons(config, recs), ["qa"]))
    assert "`ar`, 0.80x (slower than `llama-cpp-ar`)" in text
    assert peer_comparisons(RunConfig(target="t", methods=("ar", "m")), [rec("ar"), rec("m")]) == []


def test_cpu_steal_from_proc_stat_readings(tmp_path) -> None:
    from outpace.bench.machine import cpu_times, steal_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 500 5 0 0 75 0 0\ncpu0 50 0 10 250 2 0 0 37 0 0\n")
    assert cpu_times(str(stat)) == (75, 700)
    assert cpu_times(str(tmp_path / "missing")) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(str(stat)) is None
    assert steal_share((75, 700), (375, 1700)) == pytest.approx(0.3)  # 300 of 1000 ticks stolen
    assert steal_share(None, (1, 2)) is None
    assert steal_share((75, 700), (75, 700)) is None  # no time passed


def test_records_carry_cpu_steal_and_older_records_load_without_it() -> None:
    from outpace.bench.metrics import cpu_steal
    from outpace.bench.report import MethodRow, time_table

    recs = [dataclasses.replace(rec("m", str(i)), cpu_steal=s) for i, s in enumerate([0.1, 0.5, 0.2])]
    assert TurnRecord.from_json(recs[1].to_json()).cpu_steal == 0.5
    old = {k: v for k, v in rec("m").to_json().items() if k != "cpu_steal"}
    assert TurnRecord.from_json(old).cpu_steal is None
    s = cpu_steal([*recs, rec("m", "9")])
    assert (s.median, s.hi, s.n) == (pytest.approx(0.2), pytest.approx(0.5), 3)
    row = MethodRow("m", 3, 12, {}, None, None, None, None, None, None, None, 3.0, steal=s)
    assert "CPU steal: median (max)" in time_table([row]) and "| 20% (50%) |" in time_table([row])
    assert "CPU steal" not in time_table([dataclasses.replace(row, steal=None)])
