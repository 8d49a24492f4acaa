"""Server metrics, rendered in the Prometheus text exposition format (version 0.0.4).

Updated from the event loop (requests, errors) and from the worker thread (tokens, steps), so
every update takes one lock. Queue and cancellation figures come from the scheduler's own
counters at render time, so there is a single source for each number.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from outpace.serve.scheduler import SchedulerStats

if TYPE_CHECKING:
    from outpace.types import GenerationStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> _Family:
        self.samples.append((tuple(labels.items()), value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_labels(labels)} {_number(value)}" for labels, value in self.samples]
        return "\n".join(lines)


class Metrics:
    """Lifetime totals of one server process."""

    def __init__(self, model: str, drafter: str, version: str) -> None:
        self.info = {"model": model, "drafter": drafter, "version": version}
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._request_seconds: dict[str, float] = defaultdict(float)
        self._errors: Counter[tuple[str, str]] = Counter()
        self._finished: Counter[str] = Counter()
        self._totals: dict[str, float] = defaultdict(float)  # tokens, seconds, steps, draft positions

    # ------------------------------------------------------------------ updates

    def count_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(endpoint, str(status))] += 1
            self._request_seconds[endpoint] += seconds

    def count_error(self, type: str, code: str | None) -> None:
        with self._lock:
            self._errors[(type, code or "none")] += 1

    def generation_started(self, prompt_tokens: int) -> None:
        with self._lock:
            self._totals["prompt_tokens"] += prompt_tokens

    def tokens_generated(self, tokens: int, seconds: float) -> None:
        """One decoding step's output and the wall time it took (prefill included)."""
        with self._lock:
            self._totals["generated_tokens"] += tokens
            self._totals["generation_seconds"] += seconds

    def generation_finished(self, finish_reason: str, stats: GenerationStats) -> None:
        """A generation that ran to its end ('stop' or 'length'): its speculation figures."""
        with self._lock:
            self._finished[finish_reason] += 1
            self._totals["steps"] += stats.steps
            self._totals["accepted"] += sum(stats.accepted_lengths)
            self._totals["proposed_positions"] += sum(stats.proposed_at)
            self._totals["accepted_positions"] += sum(stats.accepted_at)

    # ------------------------------------------------------------------ reading

    def render(self, sched: SchedulerStats) -> str:
        """The whole exposition, one family per metric."""
        with self._lock:
            families = list(self._request_families()) + list(self._generation_families(sched))
        families += list(_scheduler_families(sched))
        return "\n".join(f.render() for f in families) + "\n"

    def _request_families(self) -> Iterable[_Family]:
        info = _Family("outpace_info", "gauge", "The served model and drafter.").add(1, **self.info)
        requests = _Family("outpace_requests_total", "counter", "HTTP requests answered, by endpoint and status.")
        for (endpoint, status), n in sorted(self._requests.items()):
            requests.add(n, endpoint=endpoint, status=status)
        seconds = _Family("outpace_request_seconds_total", "counter", "Time spent answering requests, by endpoint.")
        for endpoint, s in sorted(self._request_seconds.items()):
            seconds.add(s, endpoint=endpoint)
        errors = _Family("outpace_errors_total", "counter", "Errors sent, as responses or in streams, by type, code.")
        for (kind, code), n in sorted(self._errors.items()):
            errors.add(n, type=kind, code=code)
        return [info, requests, seconds, errors]

    def _generation_families(self, sched: SchedulerStats) -> Iterable[_Family]:
        t = self._totals
        steps = t["steps"]
        gens = _Family("outpace_generations_total", "counter", "Generations by finish reason, cancelled or failed.")
        for reason, n in sorted(self._finished.items()):
            gens.add(n, outcome=reason)
        gens.add(sched.cancelled_queued + sched.cancelled_running, outcome="cancelled")
        gens.add(sched.failed, outcome="failed")
        finished = "(finished generations)"
        return [
            gens,
            _counter("outpace_prompt_tokens_total", "Prompt tokens of started generations.", t["prompt_tokens"]),
            _counter("outpace_generated_tokens_total", "Tokens generated, cancelled generations included.",
                     t["generated_tokens"]),
            _counter("outpace_generation_seconds_total", "Time the worker spent generating.", t["generation_seconds"]),
            _counter("outpace_decode_steps_total", f"Target forwards, one per step {finished}.", steps),
            _counter("outpace_draft_tokens_accepted_total", f"Draft tokens accepted {finished}.", t["accepted"]),
            _counter("outpace_draft_positions_proposed_total", f"Draft depths proposed {finished}.",
                     t["proposed_positions"]),
            _gauge("outpace_mean_accepted_tokens_per_step", f"tau, tokens committed per target forward {finished}.",
                   _ratio(t["accepted"] + steps, steps)),
            _gauge("outpace_acceptance_rate", f"Accepted / proposed draft depths {finished}.",
                   _ratio(t["accepted_positions"], t["proposed_positions"])),
            _gauge("outpace_tokens_per_second", "Generated tokens per second of generation time.",
                   _ratio(t["generated_tokens"], t["generation_seconds"])),
        ]


def _scheduler_families(s: SchedulerStats) -> Iterable[_Family]:
    cancelled = _Family("outpace_generations_cancelled_total", "counter",
                        "Generations stopped because the client went away, by where they were.")
    cancelled.add(s.cancelled_queued, stage="queued").add(s.cancelled_running, stage="running")
    return [
        cancelled,
        _counter("outpace_requests_rejected_total", "Requests refused with 429: the queue was full.", s.rejected),
        _gauge("outpace_queue_length", "Requests waiting for the generation worker.", s.queue_length),
        _gauge("outpace_queue_capacity", "Most requests that may wait (--max-queue).", s.capacity),
        _gauge("outpace_active_generations", "Generations running now (0 or 1).", s.active),
        _gauge("outpace_worker_up", "1 when the generation worker is running.", int(s.alive)),
    ]


def _counter(name: str, help: str, value: float) -> _Family:
    return _Family(name, "counter", help).add(value)


def _gauge(name: str, help: str, value: float) -> _Family:
    return _Family(name, "gauge", help).add(value)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))
