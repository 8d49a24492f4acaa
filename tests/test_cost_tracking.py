"""benchmarks/cost_tracking.py: the timing wrapper changes nothing, and the table is computed right."""

import importlib.util
from pathlib import Path

import pytest
import torch

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.prompt_lookup import PromptLookupDrafter
from outpace.policies import CostModel

_spec = importlib.util.spec_from_file_location(
    "cost_tracking", Path(__file__).parents[1] / "benchmarks" / "cost_tracking.py")
assert _spec is not None and _spec.loader is not None
cost_tracking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cost_tracking)


def test_belief_vs_measured_divides_by_recent_single_forwards() -> None:
    log = [("m", "math", 1, 0.010, 1.0)] * 5 + [
        ("m", "math", 2, 0.018, 1.7),  # measured 1.8 against the median single forward
        ("m", "math", 2, 0.016, 1.5),
        ("ar", "math", 2, 1.0, 9.0),  # another method: ignored
        ("m", "math", 40, 0.5, 20.0),  # a prefill: beyond max_n
    ]
    early = [("m", "qa", 1, 0.010, 1.0), ("m", "qa", 2, 0.02, 1.7)]  # fewer than 5 singles yet
    table = cost_tracking.belief_vs_measured(early + log, "m", max_n=5)
    assert set(table) == {"math"}
    row = table["math"][2]
    assert row["forwards"] == 2
    assert row["belief"] == pytest.approx(1.6)
    assert row["measured"] == pytest.approx(1.7)


def test_timed_backend_logs_every_forward_and_changes_no_token(target) -> None:
    prompt = [5, 9, 3, 5, 9, 3, 5, 9]
    cfg = GenerationConfig(24, draft_length=3, adaptive=True, ignore_eos=True)
    costs = CostModel({1: 1.0, 2: 1.2, 4: 1.5}, decay=1.0)
    plain = Decoder(target, None, PromptLookupDrafter(), costs=costs).generate(prompt, cfg)
    log: list = []
    timed = cost_tracking.TimedBackend(target, log)
    timed.label, timed.costs = "pl", costs
    result = Decoder(timed, None, PromptLookupDrafter(), costs=costs).generate(prompt, cfg)
    assert result.tokens == plain.tokens
    forwards = result.stats.steps  # one forward per step but the first (it has the prefill's logits),
    forwards += 1 - (result.stats.proposed_lengths[0] == 0)  # plus the prefill
    assert len(log) == forwards
    assert all(label == "pl" and seconds > 0 for label, _, seconds, _ in log)
    assert log[0][1] == len(prompt)
    assert any(n > 1 for _, n, _, _ in log[1:]), "the drafter should have been verified at least once"
    assert [b for *_, b in log if b is not None][-1] == pytest.approx(costs.verify(log[-1][1]) / costs.verify(1))
    assert torch.is_tensor(timed.forward(timed.new_cache(), torch.tensor([1, 2])).logits)
