"""Draft budgets: how many tokens (chain) or nodes (tree) to draft next step, from measured costs.

A step that verifies the first m draft nodes commits, in expectation,
    E(m) = 1 + r_0 + ... + r_{m-1},
where r_i is the chance that draft node i ends on the accepted path. For a chain with
per-position acceptance a_1, a_2, ... this is r_i = a_1 * ... * a_{i+1}, the analysis of
Leviathan et al. 2023 (section 3.1) with a rate per position instead of one alpha; for a tree
grown best-first (every smaller tree is a prefix of the larger one, in node order) the same sum
holds node by node, as in the tree-budget analysis of Sequoia (Chen et al. 2024). A step costs
verify(m + 1) + draft(m), so the policy picks the m in 0..max that maximises E(m) / cost(m);
m = 0 is plain autoregressive decoding, chosen whenever speculation cannot pay on this machine
(on 2 CPU cores a forward of 8 tokens costs several single ones).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from outpace.backends.base import Backend
from outpace.errors import OutpaceError


@dataclass
class CostModel:
    """Seconds per target forward of n tokens, and per drafted token; updated as steps run.

    verify_s: n tokens in one forward (root + draft) -> seconds; values between measured sizes are
    interpolated linearly, beyond the largest extrapolated by the last slope.
    """

    verify_s: dict[int, float]
    draft_s_per_token: float | None = None  # None: not measured yet (the first draft step sets it)
    decay: float = 0.8  # weight of the old estimate when a new measurement arrives

    def __post_init__(self) -> None:
        if not self.verify_s or any(n < 1 or s <= 0 for n, s in self.verify_s.items()):
            raise OutpaceError("a cost model needs positive timings for forwards of >= 1 token")

    def verify(self, n: int) -> float:
        sizes = sorted(self.verify_s)
        if n in self.verify_s:
            return self.verify_s[n]
        lo = max((s for s in sizes if s < n), default=None)
        hi = min((s for s in sizes if s > n), default=None)
        if lo is None:
            return self.verify_s[sizes[0]]
        if hi is None:
            hi, lo = lo, max((s for s in sizes if s < lo), default=lo)
        if hi == lo:
            return self.verify_s[lo] * n / lo
        slope = (self.verify_s[hi] - self.verify_s[lo]) / (hi - lo)
        return max(self.verify_s[lo] + slope * (n - lo), 1e-9)

    def observe_verify(self, n: int, seconds: float) -> None:
        old = self.verify_s.get(n)
        self.verify_s[n] = seconds if old is None else self.decay * old + (1 - self.decay) * seconds

    def observe_draft(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            per, old = seconds / tokens, self.draft_s_per_token
            self.draft_s_per_token = per if old is None else self.decay * old + (1 - self.decay) * per

    def draft(self, tokens: int) -> float:
        """Seconds to draft `tokens` tokens (0 until a draft step has been timed)."""
        return tokens * (self.draft_s_per_token or 0.0)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"verify_s": {str(k): v for k, v in sorted(self.verify_s.items())}}
        if self.draft_s_per_token is not None:
            data["draft_s_per_token"] = self.draft_s_per_token
        return data

    @staticmethod
    def load(path: Path) -> CostModel:
        try:
            data = json.loads(path.read_text())
            draft = data.get("draft_s_per_token")
            return CostModel({int(k): float(v) for k, v in data["verify_s"].items()},
                             None if draft is None else float(draft))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OutpaceError(f"cannot read cost profile {path}: {err}") from None


def chain_rates(accept: list[float]) -> list[float]:
    """Per-position acceptance a_1, a_2, ... of a chain -> r_i = a_1 * ... * a_{i+1}."""
    return list(itertools.accumulate(accept, lambda run, a: run * a))


def expected_tokens(rates: list[float], m: int) -> float:
    """E(m) = 1 + r_0 + ... + r_{m-1}: tokens committed by a step verifying the first m nodes."""
    return 1.0 + sum(rates[:m])


def best_draft_length(rates: list[float], costs: CostModel, max_k: int) -> int:
    """The m in 0..max_k with the most expected tokens per second (ties: the smaller m)."""
    best_k, best_rate = 0, -math.inf
    for k in range(max_k + 1):
        rate = expected_tokens(rates, k) / (costs.verify(k + 1) + costs.draft(k))
        if rate > best_rate * (1 + 1e-9):
            best_k, best_rate = k, rate
    return best_k


@dataclass
class AdaptiveDraftLength:
    """Per-request policy for chains and trees: for each draft node index i, a smoothed rate of
    "node i ended on the accepted path" over the steps that proposed it (decayed counts with a
    prior), and the cost model, pick each step's budget. After `probe_every` steps at 0 it
    drafts one node once, so a drafter that starts paying off is noticed again; one node is
    the cheapest probe (on 2 cores verifying 5 tokens costs ~3 single ones) and measures the
    node that decides whether drafting pays at all."""

    costs: CostModel
    max_k: int
    prior: float = 0.6  # assumed per-position acceptance before any evidence (node i: prior^(i+1))
    prior_weight: float = 2.0
    decay: float = 0.95  # forgetting factor per drafting step: recent drafts count more
    probe_every: int = 16
    proposed: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    _idle: int = 0

    def rates(self) -> list[float]:
        """r_i for i < max_k (see the module docstring)."""
        out = []
        for i in range(self.max_k):
            p = self.proposed[i] if i < len(self.proposed) else 0.0
            a = self.accepted[i] if i < len(self.accepted) else 0.0
            out.append((a + self.prior ** (i + 1) * self.prior_weight) / (p + self.prior_weight))
        return out

    def hopeless(self) -> bool:
        """True when even a drafter that is always right could not pay for itself at these
        costs (for example a draft model nearly as slow as the target): decode plainly and do
        not probe. Needs a measured draft cost, so a new drafter is always tried once."""
        if self.costs.draft_s_per_token is None:
            return False
        return best_draft_length([1.0] * self.max_k, self.costs, self.max_k) == 0

    def budget(self) -> int:
        k = best_draft_length(self.rates(), self.costs, self.max_k)
        if k == 0 and not self.hopeless():
            self._idle += 1
            if self._idle >= self.probe_every:
                self._idle = 0
                return min(1, self.max_k)
        return k

    def observe(self, proposed: int, accepted_nodes: Sequence[int]) -> None:
        """A step proposed nodes 0..proposed-1 and `accepted_nodes` (indices) were accepted.
        Steps without a draft leave the estimates alone (the evidence of the last drafts stays
        until a probe refreshes it)."""
        if proposed <= 0:
            return
        for lst in (self.proposed, self.accepted):
            lst.extend([0.0] * (self.max_k - len(lst)))
            for i in range(self.max_k):
                lst[i] *= self.decay
        for i in range(min(proposed, self.max_k)):
            self.proposed[i] += 1.0
        for v in accepted_nodes:
            if v < self.max_k:
                self.accepted[v] += 1.0


def time_forwards(
    backend: Backend,
    context: int,
    sizes: Sequence[int],
    repeats: int,
    statistic: Callable[[list[float]], float] = statistics.median,
) -> dict[int, float]:
    """Seconds of one forward over k tokens after `context` cached tokens, for each k in sizes:
    `statistic` of `repeats` runs after one warm-up run (the cache rolled back after each)."""
    ids = [(i * 7919 + 11) % min(backend.vocab_size, 32000) for i in range(context + max(sizes))]
    cache = backend.new_cache()
    backend.forward(cache, torch.tensor(ids[:context]), last_only=True)
    out: dict[int, float] = {}
    for k in sizes:
        chunk = torch.tensor(ids[context : context + k])
        runs = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            backend.forward(cache, chunk)
            runs.append(time.perf_counter() - t)
            backend.rollback(cache, context)
        out[k] = statistic(runs[1:])  # the first run is a warm-up
    return out


def measure_costs(
    backend: Backend, sizes: tuple[int, ...] = (1, 2, 4, 8, 16), context: int = 128, reps: int = 3
) -> CostModel:
    """The fastest of `reps` timings of each forward size: the minimum is the estimate least
    disturbed by other work on the machine; the decoder refines it from every step it runs."""
    return CostModel(time_forwards(backend, context, sizes, reps, statistic=min))


def cached_costs(backend: Backend, cache_dir: Path, key: str) -> CostModel:
    """measure_costs once per machine and model set-up; later runs read the saved profile
    (`<cache>/profiles/KEY.json`; delete it, or run `outpace bench profile`, to measure again)."""
    path = cache_dir / "profiles" / f"{key}.json"
    if path.exists():
        return CostModel.load(path)
    costs = measure_costs(backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs.to_json(), indent=1))
    return costs
