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

Graded drafts. A drafter that grades its nodes (`Draft.grades`, for the n-gram drafters the
context tokens matched behind a node) lets the policy condition on the drafter's own evidence
instead of on a node's position only: it learns, per grade, the chance c_g that a node is
accepted given that its parent is, pooled over the decoder's requests and refined by each one;
a node's r_v is the product of c along its path, and of the drafted tree the policy verifies the
m nodes of highest r_v for the m that maximises E(m) / verify(m + 1) (the draft is already made).
Before any evidence c_g is Laplace's rule of succession, (g + 1) / (g + 2): a node behind g
matched tokens counts as a source that agreed with the context g times out of g. Grades are
ordered (more evidence is likelier, `GradesNodes`), so the estimates are made non-decreasing in g
(`monotone_rates`): otherwise a few early failures of a grade put it below the grades under it,
its nodes are never verified again, and nothing corrects it. Evidence costs nothing for a draft
that is cut whole: the step commits a token drawn from the target's p at the root, and a draft
token x is that token with chance p(x), the chance verification would have accepted x
(`AdaptiveDraftLength.observe_unverified`). So a grade that does not pay is watched every step
instead of by verifying a probe now and then.

The first step after a prefill is different: the prefill computed the root's logits, so its next
token is free and m nodes cost a forward of m tokens; it drafts only when the tokens it expects
to gain beat that forward's cost at the plain rate (`best_head_prefix`).
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
from outpace.types import Draft


@dataclass
class CostModel:
    """Seconds per target forward of n tokens, and per drafted token; updated as steps run.

    verify_s: n tokens in one forward (root + draft) -> seconds, the profile the model starts
    from; values between sizes are interpolated linearly, beyond the largest extrapolated by the
    last slope.

    Live timings refine it as a level times a shape: verify(n) = level * rel(n), where level is
    the current cost of one token, learnt from single-token forwards, and rel(n) (rel(1) = 1)
    the relative cost of n, learnt from forwards of n against that level. Budgets depend only on
    relative costs, so a longer context or a busier machine, which slows every size, moves all
    sizes at once: a size the decoder has not run lately keeps its relative cost instead of its
    absolute profile time going stale next to the sizes it did run (which made verifying several
    tokens look cheap at long contexts). The first timing of a size is smoothed like any other.
    """

    verify_s: dict[int, float]
    draft_s_per_token: float | None = None  # None: not measured yet (the first draft step sets it)
    decay: float = 0.8  # weight of the old estimate when a new measurement arrives
    _level: float = field(init=False, repr=False)
    _rel: dict[int, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.verify_s or any(n < 1 or s <= 0 for n, s in self.verify_s.items()):
            raise OutpaceError("a cost model needs positive timings for forwards of >= 1 token")
        self._level = _interpolate(self.verify_s, 1)
        self._rel = {1: 1.0} | {n: s / self._level for n, s in self.verify_s.items() if n > 1}

    def verify(self, n: int) -> float:
        return self._level * _interpolate(self._rel, n)

    def observe_verify(self, n: int, seconds: float) -> None:
        if n == 1:
            self._level = self.decay * self._level + (1 - self.decay) * seconds
        else:
            old = _interpolate(self._rel, n)
            self._rel[n] = self.decay * old + (1 - self.decay) * seconds / self._level

    def observe_draft(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            per, old = seconds / tokens, self.draft_s_per_token
            self.draft_s_per_token = per if old is None else self.decay * old + (1 - self.decay) * per

    def draft(self, tokens: int) -> float:
        """Seconds to draft `tokens` tokens (0 until a draft step has been timed)."""
        return tokens * (self.draft_s_per_token or 0.0)

    def to_json(self) -> dict[str, object]:
        """The current curve (the profile, refined by what was observed), in `load`'s format."""
        data: dict[str, object] = {"verify_s": {str(k): self.verify(k) for k in sorted(self._rel)}}
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


def _interpolate(points: dict[int, float], n: int) -> float:
    """points[n], else linear between the nearest sizes around n, beyond the largest by the last
    slope, below the smallest its value (positive)."""
    if n in points:
        return points[n]
    sizes = sorted(points)
    lo = max((s for s in sizes if s < n), default=None)
    hi = min((s for s in sizes if s > n), default=None)
    if lo is None:
        return points[sizes[0]]
    if hi is None:
        hi, lo = lo, max((s for s in sizes if s < lo), default=lo)
    if hi == lo:
        return points[lo] * n / lo
    slope = (points[hi] - points[lo]) / (hi - lo)
    return max(points[lo] + slope * (n - lo), 1e-9)


def chain_rates(accept: list[float]) -> list[float]:
    """Per-position acceptance a_1, a_2, ... of a chain -> r_i = a_1 * ... * a_{i+1}."""
    return list(itertools.accumulate(accept, lambda run, a: run * a))


def expected_tokens(rates: list[float], m: int) -> float:
    """E(m) = 1 + r_0 + ... + r_{m-1}: tokens committed by a step verifying the first m nodes."""
    return 1.0 + sum(rates[:m])


def best_prefix(rates: list[float], cost: Callable[[int], float], max_k: int) -> int:
    """The m in 0..max_k (and <= len(rates)) with the most E(m) / cost(m); ties: the smaller m."""
    best_k, best_rate = 0, -math.inf
    for k in range(min(max_k, len(rates)) + 1):
        rate = expected_tokens(rates, k) / cost(k)
        if rate > best_rate * (1 + 1e-9):
            best_k, best_rate = k, rate
    return best_k


def best_draft_length(rates: list[float], costs: CostModel, max_k: int) -> int:
    """The m in 0..max_k with the most expected tokens per second of drafting and verifying."""
    return best_prefix(rates, lambda k: costs.verify(k + 1) + costs.draft(k), max_k)


def best_head_prefix(rates: list[float], cost: Callable[[int], float], unit: float, max_k: int) -> int:
    """The m for the first step after a prefill, which has the root's logits already: taking the
    next token from them is free, and verifying m > 0 nodes costs a forward of m tokens, cost(m),
    for r_0 + ... + r_{m-1} tokens more. Time is valued at the plain rate, one token per `unit`
    seconds; the m with the largest gain, tokens minus cost(m) / unit, or 0 if none gains."""
    best_k, best_gain = 0, 0.0
    for k in range(1, min(max_k, len(rates)) + 1):
        gain = sum(rates[:k]) - cost(k) / unit
        if gain > best_gain + 1e-9:
            best_k, best_gain = k, gain
    return best_k


def succession_prior(grade: int) -> float:
    """c_g before any evidence: Laplace's rule of succession after `grade` agreements out of
    `grade` (a grade counts the context tokens the source of a node agreed with)."""
    return (grade + 1) / (grade + 2)


def path_rates(parents: Sequence[int], cond: Sequence[float]) -> list[float]:
    """r_v of each node of a tree (topological order): cond[v], the chance v is accepted given its
    parent is, times the parent's r (the root's is 1)."""
    r: list[float] = []
    for v, p in enumerate(parents):
        r.append(cond[v] * (r[p] if p >= 0 else 1.0))
    return r


def best_nodes(
    parents: Sequence[int], cond: Sequence[float], costs: CostModel, max_k: int, after_prefill: bool = False
) -> list[int]:
    """The nodes of an already drafted tree worth verifying, ascending: the m of highest r_v for
    the m in 0..max_k with the most E(m) / verify(m + 1) (after a prefill: `best_head_prefix`).
    Ties go to the lower index, and with cond <= 1 a child never outranks its parent, so the
    kept nodes always form a tree."""
    r = path_rates(parents, cond)
    order = sorted(range(len(r)), key=lambda v: (-r[v], v))
    ranked = [r[v] for v in order]
    if after_prefill:
        m = best_head_prefix(ranked, costs.verify, costs.verify(1), max_k)
    else:
        m = best_prefix(ranked, lambda k: costs.verify(k + 1), max_k)
    return sorted(order[:m])


def monotone_rates(rates: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence closest to `rates` in least squares weighted by `weights`
    (isotonic regression by pooling adjacent violators, Barlow et al. 1972): each run of rates
    that decreases is replaced by its weighted mean, so a well-evidenced rate moves little and a
    thinly evidenced one that breaks the order is pulled to its neighbours."""
    blocks: list[tuple[float, float, int]] = []  # (mean, weight, rates pooled)
    for rate, weight in zip(rates, weights, strict=True):
        mean, total, n = rate, weight, 1
        while blocks and blocks[-1][0] > mean:
            m, w, k = blocks.pop()
            mean, total, n = (m * w + mean * total) / (w + total), w + total, n + k
        blocks.append((mean, total, n))
    return [mean for mean, _, n in blocks for _ in range(n)]


@dataclass
class GradeCounts:
    """Per grade: the weight of draft nodes verified while their parent was accepted (or sat at
    the root), and of those accepted. A grade's weight is held at `memory` at most (older
    evidence scaled down), so counts pooled over many requests follow a changing workload."""

    proposed: dict[int, float] = field(default_factory=dict)
    accepted: dict[int, float] = field(default_factory=dict)
    memory: float = math.inf

    def add(self, grade: int, accepted: bool) -> None:
        p = self.proposed.get(grade, 0.0) + 1.0
        a = self.accepted.get(grade, 0.0) + float(accepted)
        if p > self.memory:
            a, p = a * self.memory / p, self.memory
        self.proposed[grade], self.accepted[grade] = p, a

    def rate(self, grade: int, prior: float, weight: float) -> float:
        """(accepted + prior * weight) / (proposed + weight)."""
        return (self.accepted.get(grade, 0.0) + prior * weight) / (self.proposed.get(grade, 0.0) + weight)


@dataclass
class AdaptiveDraftLength:
    """Per-request policy for chains and trees: for each draft node index i, a smoothed rate of
    "node i ended on the accepted path" over the steps that proposed it (decayed counts with a
    prior), and the cost model, pick each step's budget. After `probe_every` steps at 0 it
    drafts one node once, so a drafter that starts paying off is noticed again; one node is
    the cheapest probe (on 2 cores verifying 5 tokens costs ~3 single ones) and measures the
    node that decides whether drafting pays at all.

    With `pooled` (the drafter grades its nodes, see the module docstring) the drafter is asked
    for max_k nodes every step and `select` keeps the ones whose grades pay. A grade's rate is
    this request's counts with the pooled rate as prior (worth `request_weight` observations);
    the pooled rate starts at `succession_prior` (worth `prior_weight`): a long match is tried at
    once, a one-token match only where verifying one more token is cheap. Graded drafts are not
    probed: a draft cut whole is evidence all the same (`observe_unverified`)."""

    costs: CostModel
    max_k: int
    prior: float = 0.6  # assumed per-position acceptance before any evidence (node i: prior^(i+1))
    prior_weight: float = 2.0
    decay: float = 0.95  # forgetting factor per drafting step: recent drafts count more
    probe_every: int = 16
    pooled: GradeCounts | None = None  # per-grade counts over the decoder's requests, updated here
    request_weight: float = 4.0
    proposed: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    graded: GradeCounts = field(default_factory=GradeCounts)  # this request's per-grade counts
    _idle: int = 0

    def rates(self) -> list[float]:
        """r_i for i < max_k (see the module docstring)."""
        out = []
        for i in range(self.max_k):
            p = self.proposed[i] if i < len(self.proposed) else 0.0
            a = self.accepted[i] if i < len(self.accepted) else 0.0
            out.append((a + self.prior ** (i + 1) * self.prior_weight) / (p + self.prior_weight))
        return out

    def grade_rate(self, grade: int) -> float:
        """c_g before the grades are put in order: the chance a node of this grade is accepted
        given its parent is."""
        prior = succession_prior(grade)
        pooled = prior if self.pooled is None else self.pooled.rate(grade, prior, self.prior_weight)
        return self.graded.rate(grade, pooled, self.request_weight)

    def grade_rates(self, top: int) -> list[float]:
        """c_g for g in 0..top, non-decreasing in g (`monotone_rates`), each weighted by the
        evidence behind it: the prior's weight and the nodes of that grade counted so far."""
        counts = self.graded if self.pooled is None else self.pooled  # the pool holds this request's too
        weights = [self.prior_weight + counts.proposed.get(g, 0.0) for g in range(top + 1)]
        return monotone_rates([self.grade_rate(g) for g in range(top + 1)], weights)

    def hopeless(self) -> bool:
        """True when even a drafter that is always right could not pay for itself at these
        costs (for example a draft model nearly as slow as the target): decode plainly and do
        not probe. Needs a measured draft cost, so a new drafter is always tried once."""
        if self.costs.draft_s_per_token is None:
            return False
        return best_draft_length([1.0] * self.max_k, self.costs, self.max_k) == 0

    def budget(self, after_prefill: bool = False) -> int:
        """Draft nodes to ask for. `after_prefill`: the step has the root's logits already (see
        `best_head_prefix`); it never probes."""
        if self.pooled is not None:
            return self.max_k  # graded drafts: `select` decides what is verified
        if after_prefill:
            cost = self.costs
            return best_head_prefix(self.rates(), lambda k: cost.verify(k) + cost.draft(k), cost.verify(1), self.max_k)
        k = best_draft_length(self.rates(), self.costs, self.max_k)
        if k == 0 and not self.hopeless() and self._probe_due():
            return min(1, self.max_k)
        return k

    def select(self, draft: Draft, after_prefill: bool = False) -> Draft:
        """The nodes of a graded draft worth verifying; without `pooled` (the drafter does not
        declare grades) or without grades the draft is kept whole. Only deterministic drafts
        (q None) are cut by their grades: their tokens, and so their grades, are a function of
        the context, so which nodes are verified does not depend on a random draw and every
        verified position still yields the target's distribution. Cutting a sampled draft by
        what was sampled would bias it."""
        if self.pooled is None or draft.grades is None or draft.q is not None or not len(draft):
            return draft
        grades = draft.grades.tolist()
        c = self.grade_rates(max(grades + list(self.pooled.proposed)))
        keep = best_nodes(draft.parents.tolist(), [c[g] for g in grades], self.costs, self.max_k, after_prefill)
        return draft.subtree(keep)

    def _probe_due(self) -> bool:
        """Count a step without drafting; True once every `probe_every` of them."""
        self._idle += 1
        if self._idle >= self.probe_every:
            self._idle = 0
            return True
        return False

    def observe(self, draft: Draft, accepted_nodes: Sequence[int]) -> None:
        """A step verified `draft` and accepted `accepted_nodes` (indices, root to leaf). Steps
        without a draft leave the estimates alone (the evidence of the last drafts stays until
        a probe refreshes it)."""
        n = len(draft)
        if n <= 0:
            return
        for lst in (self.proposed, self.accepted):
            lst.extend([0.0] * (self.max_k - len(lst)))
            for i in range(self.max_k):
                lst[i] *= self.decay
        for i in range(min(n, self.max_k)):
            self.proposed[i] += 1.0
        for v in accepted_nodes:
            if v < self.max_k:
                self.accepted[v] += 1.0
        if draft.grades is not None:
            on_path = set(accepted_nodes)
            for v, (p, g) in enumerate(zip(draft.parents.tolist(), draft.grades.tolist())):
                if p < 0 or p in on_path:
                    self._count(g, v in on_path)

    def observe_unverified(self, draft: Draft, token: int) -> None:
        """A step verified none of `draft` (`select` cut it whole) and committed `token`, drawn
        from the target's p at the root (greedy: its argmax). Verification would have accepted a
        root child x of a deterministic draft with chance p(x) (speculative sampling with q the
        point mass on x: min(1, p(x) / 1)), and [token == x] has that expectation: evidence for
        x's grade at no cost, unbiased at any temperature. (A tree's later siblings are verified
        against the residual once the first is rejected; for them this is exact under greedy
        decoding only.) Drafts without grades, or sampled ones (q), are ignored as in `select`."""
        if draft.grades is None or draft.q is not None:
            return
        for v, (p, g) in enumerate(zip(draft.parents.tolist(), draft.grades.tolist())):
            if p < 0:
                self._count(g, int(draft.tokens[v]) == token)

    def _count(self, grade: int, accepted: bool) -> None:
        for counts in (self.graded, self.pooled):
            if counts is not None:
                counts.add(grade, accepted)


PROFILE_VERSION = "v2"  # in the cached profile's name: profiles measured another way are not reused


def time_forwards(
    backend: Backend,
    context: int,
    sizes: Sequence[int],
    repeats: int,
) -> dict[int, float]:
    """Seconds of one forward over k tokens after `context` cached tokens, for each k in sizes:
    the median of `repeats` runs after one warm-up run (the cache rolled back after each)."""
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
        out[k] = statistics.median(runs[1:])  # the first run is a warm-up
    return out


def measure_costs(
    backend: Backend, sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 8, 16), context: int = 128, reps: int = 5
) -> CostModel:
    """The median of `reps` timings of each forward size, every size a budget of up to 4 draft
    tokens can verify measured rather than interpolated: the profile is the shape the decoder
    starts from (it refines it from every step it runs). A median, not the minimum: the minimum
    of each size is a different lucky run, which distorts the ratios between sizes (a profile
    taken that way here had 4 tokens at 1.9x one, where steps measure 2.1-3.2x)."""
    return CostModel(time_forwards(backend, context, sizes, reps))


def cached_costs(backend: Backend, cache_dir: Path, key: str) -> CostModel:
    """measure_costs once per machine and model set-up; later runs read the saved profile
    (`<cache>/profiles/KEY-v2.json`; delete it to measure again)."""
    path = cache_dir / "profiles" / f"{key}-{PROFILE_VERSION}.json"
    if path.exists():
        return CostModel.load(path)
    costs = measure_costs(backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs.to_json(), indent=1))
    return costs
