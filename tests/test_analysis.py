"""The optimal multi-draft acceptance (dual of the transport problem, Hu et al. 2025) against
brute force over all subsets and scipy's primal LP, the acceptance formulas of the implemented
verifiers against simulations of those verifiers, and `outpace analyze acceptance`."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from outpace import analysis_cli
from outpace.analysis import optimal as opt
from outpace.analysis import verifiers as ver
from outpace.analysis.acceptance import acceptance_table, spec_bench_prompts
from outpace.drafters.draft_tree import top_without_replacement
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, make_rng, sample
from outpace.verify.multidraft import kseq_select, recursive_rejection
from outpace.verify.tree import specinfer_tree


def random_pair(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.dirichlet(np.ones(vocab) * rng.uniform(0.2, 2.0))
    q = rng.dirichlet(np.ones(vocab) * rng.uniform(0.05, 2.0))
    if rng.random() < 0.3:
        q[rng.integers(vocab)] = 0.0
        q /= q.sum()
    if rng.random() < 0.3:
        p[rng.integers(vocab)] = 0.0
        p /= p.sum()
    return p, q


@pytest.mark.parametrize("scheme", opt.SCHEMES)
def test_dual_matches_brute_force_and_the_primal_lp(scheme):
    rng = np.random.default_rng(0 if scheme == "with" else 1)
    for _ in range(60):
        p, q = random_pair(rng, int(rng.integers(2, 7)))
        k = int(rng.integers(1, 5))
        fast = opt.optimal_acceptance(p, q, k, scheme)
        brute = opt.dual_brute_force(p, q, k, scheme)
        lp = opt.primal_lp(p, q, k, scheme)
        assert abs(fast.value - brute) < 1e-6 and abs(lp - brute) < 1e-6, (p, q, k)
        assert fast.error < 1e-6


def test_a_hand_solved_case():
    """p = (1/2, 1/2, 0), q = (1/2, 0, 1/2), two i.i.d. drafts: the output must be token 1 half
    the time, which is never drafted, so alpha* <= 1/2; and P(token 0 drafted) = 3/4 >= 1/2 lets
    every output 0 be accepted: alpha* = 1/2. Without replacement both tokens 0 and 2 are
    always drafted: still 1/2."""
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.0, 0.5])
    for scheme in opt.SCHEMES:
        assert opt.optimal_acceptance(p, q, 2, scheme).value == pytest.approx(0.5, abs=1e-12)
        assert opt.primal_lp(p, q, 2, scheme) == pytest.approx(0.5, abs=1e-9)


def test_one_draft_is_the_maximal_coupling():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p, q = random_pair(rng, 8)
        for scheme in opt.SCHEMES:
            assert opt.optimal_acceptance(p, q, 1, scheme).value == pytest.approx(np.minimum(p, q).sum(), abs=1e-12)


@pytest.mark.parametrize("k", [3, 4])
def test_exponential_race_matches_enumeration(k):
    rng = np.random.default_rng(k)
    for _ in range(20):
        q = rng.dirichlet(np.ones(6) * rng.uniform(0.1, 2.0))
        law = opt.draft_set_law(q, k, "without")
        g, err = opt.without_replacement_containment(q, k)
        exact = [sum(w for s, w in law.items() if s <= set(range(j + 1))) for j in range(6)]
        np.testing.assert_allclose(g, exact, atol=1e-8)
        assert err < 1e-6


def test_large_vocabulary_closed_forms():
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(50_000) * 0.1), rng.dirichlet(np.ones(50_000) * 0.1)
    one = np.minimum(p, q).sum()
    with2, with4 = (opt.optimal_acceptance(p, q, k, "with").value for k in (2, 4))
    without2 = opt.optimal_acceptance(p, q, 2, "without").value
    assert one < with2 < with4 <= 1.0 and one < without2 <= 1.0


def test_verifiers_stay_below_the_optimum():
    rng = np.random.default_rng(4)
    trng = make_rng(0)
    for _ in range(40):
        p, q = random_pair(rng, int(rng.integers(2, 6)))
        for k in (1, 2, 3):
            best = {s: opt.optimal_acceptance(p, q, k, s).value for s in opt.SCHEMES}
            for name, scheme in ver.VERIFIERS.items():
                assert ver.acceptance(name, p, q, k, trng).value <= best[scheme] + 1e-9
            # SpecTr's guarantee: K-SEQ is (1 - 1/e)-optimal among i.i.d.-draft verifiers
            assert ver.spectr_acceptance(p, q, k).value >= (1 - 1 / math.e) * best["with"] - 1e-9
            if k == 1:
                for name in ver.VERIFIERS:
                    assert ver.acceptance(name, p, q, 1, trng).value == pytest.approx(np.minimum(p, q).sum())


def test_rsd_monte_carlo_agrees_with_the_exact_recursion():
    rng = np.random.default_rng(5)
    p, q = random_pair(rng, 6)
    exact = ver.rsd_acceptance(p, q, 3, make_rng(0))
    mc = ver.rsd_acceptance(p, q, 3, make_rng(1), samples=4000, exact_limit=0)
    assert exact.exact and not mc.exact
    assert abs(mc.value - exact.value) < 4 * mc.error + 1e-9


def test_formulas_are_what_the_implemented_verifiers_reach():
    """Simulate the verifiers the decoder runs (one tree level) and compare their acceptance
    frequency with the formulas (4 standard errors)."""
    p = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.1, 0.0])
    q = torch.tensor([0.05, 0.4, 0.05, 0.3, 0.1, 0.1])
    p64, q64 = p.double().numpy(), q.double().numpy()
    k, n = 3, 2000
    rng = make_rng(7)
    logits = torch.log(p.clamp_min(1e-30)).expand(k + 1, -1)  # p again after processing at T=1
    hits = {"specinfer": 0, "spectr": 0, "rsd": 0}
    for _ in range(n):
        iid = [sample(q, rng) for _ in range(k)]
        r = specinfer_tree(torch.tensor(iid), torch.full((k,), -1), q.expand(k, -1), logits, SamplingConfig(temperature=1.0), rng)
        hits["specinfer"] += bool(r.accepted)
        hits["spectr"] += kseq_select(p, q, iid, rng)[0] is not None
        hits["rsd"] += recursive_rejection(p, q, top_without_replacement(q, k, rng), rng)[0] is not None
    for name, count in hits.items():
        expected = ver.acceptance(name, p64, q64, k, make_rng(0)).value
        assert abs(count / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n), name


def test_table_over_positions():
    rng = np.random.default_rng(6)
    pairs = [random_pair(rng, 5) for _ in range(3)]
    p, q = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    rows = acceptance_table(p, q, [2], opt.SCHEMES)
    assert [(r.scheme, r.verifier) for r in rows] == [("with", "specinfer"), ("with", "spectr"), ("without", "rsd")]
    for r in rows:
        assert r.positions == 3 and r.gap >= -1e-9 and r.method == "exact"
        expected = np.mean([opt.optimal_acceptance(a, b, 2, r.scheme).value for a, b in pairs])
        assert r.optimal == pytest.approx(expected)


# ------------------------------------------------------------------ the command


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    analysis_cli.register(parser.add_subparsers())
    args = parser.parse_args(["analyze", "acceptance", *argv])
    return args.run(args)


def test_cli_on_arrays(tmp_path, capsys):
    rng = np.random.default_rng(8)
    p, q = rng.dirichlet(np.ones(5), size=3), rng.dirichlet(np.ones(5), size=3)
    np.savez(tmp_path / "pq.npz", p=p, q=q)
    assert run_cli("--input", str(tmp_path / "pq.npz"), "--k", "2,3", "--check-lp") == 0
    out = capsys.readouterr().out
    assert "| i.i.d. (with replacement) | 2 | spectr |" in out and "largest difference" in out
    (tmp_path / "pq.json").write_text(json.dumps({"p_logits": np.log(p).tolist(), "q_logits": np.log(q).tolist()}))
    assert run_cli("--input", str(tmp_path / "pq.json"), "--k", "2", "--scheme", "without", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["positions"] == 3 and [r["verifier"] for r in record["rows"]] == ["rsd"]
    expected = np.mean([opt.optimal_acceptance(a, b, 2, "without").value for a, b in zip(p, q)])
    assert record["rows"][0]["optimal"] == pytest.approx(expected, abs=1e-6)


def test_cli_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", p=np.array([0.5, 0.6]), q=np.array([0.5, 0.5]))
    np.savez(tmp_path / "ok.npz", p=np.array([0.5, 0.5]), q=np.array([0.5, 0.5]))
    for argv, message in [
        (["--input", str(tmp_path / "bad.npz")], "must sum to 1"),
        (["--input", str(tmp_path / "missing.npz")], "cannot read"),
        (["--input", str(tmp_path / "ok.npz"), "--k", "0"], "integers >= 1"),
        (["--input", str(tmp_path / "ok.npz"), "--scheme", "both"], "--scheme takes"),
        (["--target", "x"], "--target needs --draft"),
    ]:
        with pytest.raises(OutpaceError, match=message):
            run_cli(*argv)


def test_spec_bench_prompts_rotate_categories():
    prompts = spec_bench_prompts(3)
    assert len(prompts) == 3 and len(set(prompts)) == 3


@pytest.mark.slow
def test_cli_on_a_real_model_pair(capsys):
    """smollm2-135m drafting for itself: q = p, so every verifier accepts everything."""
    assert run_cli("--target", "smollm2-135m", "--draft", "smollm2-135m", "--prompts", "1", "--tokens", "3",
                   "--k", "2", "--top-k", "20", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    for row in record["rows"]:
        assert row["optimal"] == pytest.approx(1.0, abs=1e-6) and row["acceptance"] == pytest.approx(1.0, abs=1e-6)
