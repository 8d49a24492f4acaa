"""The benchmark's figures, as pure functions of turn records (no I/O, no clocks).

Definitions follow Spec-Bench (``evaluation/speed.py``, ``equal.py``):

- *speed of a prompt*: its new tokens over its wall time, summed over its turns.
- *tokens/s of a method*: the mean of its prompts' speeds.
- *speedup*: tokens/s of a method over tokens/s of the baseline, computed on the turns both
  have (so a half-finished run compares like with like), separately per repeat; repeats are
  summarised by their median and range.
- *tau* (mean accepted tokens): tokens committed per target forward, pooled over all steps:
  sum(accepted + 1) / steps.
- *exactness*: the fraction of turns whose new token ids equal the reference method's on the
  same (prompt, turn, repeat).
- *projected speedup*: see `projected_speedup`.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from outpace.bench.costs import CostProfile
from outpace.bench.records import TurnRecord

TurnKey = tuple[str, int, int]  # (question_id, turn, repeat)


@dataclass(frozen=True)
class Spread:
    """Median and range of a figure over repeats."""

    median: float
    lo: float
    hi: float
    n: int


@dataclass(frozen=True)
class Exactness:
    """Turns identical to the reference; ``divergences`` holds, for each differing turn, the
    index of the first differing token (the shorter length when one is a prefix of the other)."""

    matched: int
    total: int
    divergences: tuple[int, ...]

    @property
    def fraction(self) -> float:
        return self.matched / self.total if self.total else 0.0


@dataclass(frozen=True)
class TimeSplit:
    """Seconds summed over turns. ``untracked`` is wall time outside the decoder's own
    accounting (detokenization, call overhead)."""

    prefill: float
    draft: float
    verify: float
    other: float
    untracked: float
    wall: float

    def shares(self) -> dict[str, float]:
        parts = {"prefill": self.prefill, "draft": self.draft, "verify": self.verify,
                 "other": self.other, "untracked": self.untracked}
        return {k: (v / self.wall if self.wall > 0 else 0.0) for k, v in parts.items()}


def spread(values: Sequence[float]) -> Spread | None:
    """Median, min and max of `values` (None when empty)."""
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))


def turn_key(r: TurnRecord) -> TurnKey:
    return (r.question_id, r.turn, r.repeat)


def aligned(a: Sequence[TurnRecord], b: Sequence[TurnRecord]) -> tuple[list[TurnRecord], list[TurnRecord]]:
    """The records of `a` and of `b` restricted to the (prompt, turn, repeat) both have."""
    common = {turn_key(r) for r in a} & {turn_key(r) for r in b}
    return [r for r in a if turn_key(r) in common], [r for r in b if turn_key(r) in common]


def equal_length(a: Sequence[TurnRecord], b: Sequence[TurnRecord]) -> tuple[list[TurnRecord], list[TurnRecord]]:
    """`aligned`, further restricted to the turns where both produced as many new tokens. Engines
    whose outputs diverge (a batched forward and one-token forwards round differently) can stop
    at different lengths, and since a prompt's tokens/s counts its prefill, a turn that answers
    in 7 tokens instead of 22 looks slower for it: on these turns only speed is compared."""
    a, b = aligned(a, b)
    lengths = {turn_key(r): r.new_tokens for r in b}
    same = {turn_key(r) for r in a if lengths[turn_key(r)] == r.new_tokens}
    return [r for r in a if turn_key(r) in same], [r for r in b if turn_key(r) in same]


def prompt_speeds(records: Iterable[TurnRecord]) -> dict[tuple[str, int], float]:
    """Tokens/s of each (prompt, repeat): its turns' new tokens over their wall time."""
    tokens: dict[tuple[str, int], int] = defaultdict(int)
    wall: dict[tuple[str, int], float] = defaultdict(float)
    for r in records:
        tokens[(r.question_id, r.repeat)] += r.new_tokens
        wall[(r.question_id, r.repeat)] += r.wall_s
    return {k: (tokens[k] / wall[k] if wall[k] > 0 else 0.0) for k in tokens}


def speeds_by_repeat(records: Iterable[TurnRecord]) -> dict[int, float]:
    """Mean prompt speed (tokens/s) of each repeat."""
    per_repeat: dict[int, list[float]] = defaultdict(list)
    for (_, repeat), speed in prompt_speeds(records).items():
        per_repeat[repeat].append(speed)
    return {r: statistics.fmean(v) for r, v in sorted(per_repeat.items())}


def speedups(method: Sequence[TurnRecord], baseline: Sequence[TurnRecord], same_length: bool = False) -> list[float]:
    """Speedup of `method` over `baseline` per repeat, on the turns both have (`same_length`: of
    those, the turns where both produced as many tokens, `equal_length`)."""
    m, b = (equal_length if same_length else aligned)(method, baseline)
    ms, bs = speeds_by_repeat(m), speeds_by_repeat(b)
    return [ms[r] / bs[r] for r in sorted(ms) if r in bs and bs[r] > 0]


def tau(records: Iterable[TurnRecord]) -> float | None:
    """Mean tokens per target forward over all steps; None when no record has steps."""
    steps = committed = 0
    for r in records:
        if r.accepted_lengths is not None:
            steps += len(r.accepted_lengths)
            committed += sum(r.accepted_lengths) + len(r.accepted_lengths)
    return committed / steps if steps else None


def accepted_histogram(records: Iterable[TurnRecord]) -> Counter[int]:
    """How many steps accepted 0, 1, 2, ... draft tokens."""
    counts: Counter[int] = Counter()
    for r in records:
        counts.update(r.accepted_lengths or ())
    return counts


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing token, None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def exactness(records: Sequence[TurnRecord], reference: Sequence[TurnRecord]) -> Exactness | None:
    """Turns of `records` whose tokens equal `reference`'s on the same (prompt, turn, repeat);
    None when they share no turn."""
    ref = {turn_key(r): r.tokens for r in reference}
    matched, divergences = 0, []
    for r in records:
        if turn_key(r) not in ref:
            continue
        at = first_difference(r.tokens, ref[turn_key(r)])
        if at is None:
            matched += 1
        else:
            divergences.append(at)
    total = matched + len(divergences)
    return Exactness(matched, total, tuple(divergences)) if total else None


def time_split(records: Iterable[TurnRecord]) -> TimeSplit | None:
    """Where the wall time went, summed over turns; None for methods without step accounting."""
    sums = [0.0] * 5
    any_steps = False
    for r in records:
        sums[4] += r.wall_s
        if r.draft_s is None:
            continue
        any_steps = True
        parts = (r.prefill_s or 0.0, r.draft_s, r.verify_s or 0.0, r.other_s or 0.0)
        for i, v in enumerate(parts):
            sums[i] += v
    if not any_steps:
        return None
    prefill, draft, verify, other, wall = sums
    return TimeSplit(prefill, draft, verify, other, max(0.0, wall - prefill - draft - verify - other), wall)


def ms_per_step(records: Iterable[TurnRecord], phase: str) -> float | None:
    """Median over turns of the `phase` ('draft_s' or 'verify_s') seconds per step, in ms."""
    values = [1000 * getattr(r, phase) / r.steps for r in records if r.steps and getattr(r, phase) is not None]
    return statistics.median(values) if values else None


def state_bytes(records: Iterable[TurnRecord]) -> Spread | None:
    """Spread over turns of the drafter's state after the turn (None when not reported)."""
    return spread([float(r.drafter_state_bytes) for r in records if r.drafter_state_bytes is not None])


def cpu_steal(records: Iterable[TurnRecord]) -> Spread | None:
    """Spread over turns of the CPU share the hypervisor took (None when not recorded)."""
    return spread([r.cpu_steal for r in records if r.cpu_steal is not None])


def projected_speedup(records: Iterable[TurnRecord], profile: CostProfile, draft_is_model: bool) -> float | None:
    """Speedup over autoregressive decoding if each step cost what `profile` says.

    For every recorded step with p draft tokens proposed and a accepted, the projected time is
    draft(p) + verify(p + 1) and the step commits a + 1 tokens; the same tokens cost one
    ``ar_ms`` each autoregressively. draft(p) = p * draft_ms_per_token for model drafters and
    0 for model-free ones (prompt lookup). Prefill is left out on both sides. The result is the
    ratio of totals over all steps; None without per-step proposals (peers).
    """
    per_token = profile.draft_ms_per_token if draft_is_model else 0.0
    time_ms = 0.0
    committed = 0
    for r in records:
        if r.accepted_lengths is None or r.proposed_lengths is None:
            return None
        committed += sum(r.accepted_lengths) + len(r.accepted_lengths)
        time_ms += sum(p * per_token + profile.verify_cost(p + 1) for p in r.proposed_lengths)
    return committed * profile.ar_ms / time_ms if time_ms > 0 else None


@dataclass(frozen=True)
class StepEconomics:
    """Why a method decodes as fast as it does: ``tau`` tokens per step against ``step_cost``,
    what one of its steps costs (draft + verify + other) in baseline tokens' time."""

    tau: float
    step_cost: float

    @property
    def decode_speedup(self) -> float:
        """Decode-phase speedup over the baseline (prefill excluded); > 1 exactly when tau > step_cost."""
        return self.tau / self.step_cost


def step_economics(records: Sequence[TurnRecord], baseline: Sequence[TurnRecord]) -> StepEconomics | None:
    """Tokens per step and the relative cost of a step, on the turns both ran.

    A step's cost is its draft + verify + other seconds, pooled over steps; it is divided by the
    baseline's pooled seconds per committed token (one autoregressive step, for ``ar``). The
    step cost is where the backend's cost curve shows: verifying k tokens costs more than one
    when a forward is compute-bound. None without step accounting on either side.
    """
    mine, base = aligned(records, baseline)

    def seconds_and_steps(rs: Iterable[TurnRecord]) -> tuple[float, int]:
        timed = [r for r in rs if r.steps and r.draft_s is not None]
        seconds = sum((r.draft_s or 0.0) + (r.verify_s or 0.0) + (r.other_s or 0.0) for r in timed)
        return seconds, sum(r.steps or 0 for r in timed)

    (s_m, n_m), (s_b, n_b) = seconds_and_steps(mine), seconds_and_steps(base)
    t_m, t_b = tau(mine), tau(base)
    if not (n_m and n_b and s_m > 0 and s_b > 0) or t_m is None or t_b is None:
        return None
    return StepEconomics(t_m, (s_m / n_m) / (s_b / (n_b * t_b)))


def group(records: Iterable[TurnRecord], key: Callable[[TurnRecord], str]) -> dict[str, list[TurnRecord]]:
    """Records grouped by `key`, groups in order of first appearance."""
    out: dict[str, list[TurnRecord]] = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out
