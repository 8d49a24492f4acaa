"""A small load generator for `outpace serve`: concurrent streaming chat requests over HTTP.

Used by the tests (against a tiny model) and by `benchmarks/serve/load_test.py` (against a
real one). Every request is bounded by a timeout and the whole run by another, so a stuck
server fails the run instead of hanging it. Needs httpx (in the `serve` extra).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """One request's result: HTTP status, streamed text, completion tokens and timings."""

    index: int
    prompt: int  # index into the prompts
    status: int = 0
    text: str = ""
    completion_tokens: int = 0
    latency_s: float = 0.0
    first_token_s: float | None = None
    error: str | None = None


@dataclass
class LoadReport:
    concurrency: int
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200 and o.error is None]

    @property
    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    @property
    def requests_per_s(self) -> float:
        return len(self.ok) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return sum(o.completion_tokens for o in self.ok) / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, q: float) -> float:
        """The q-quantile (0..1) of the successful requests' latencies, in seconds."""
        return _quantile([o.latency_s for o in self.ok], q)

    def first_token(self, q: float) -> float:
        return _quantile([o.first_token_s for o in self.ok if o.first_token_s is not None], q)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.outcomes),
            "succeeded": len(self.ok),
            "statuses": dict(sorted(self.statuses.items())),
            "concurrency": self.concurrency,
            "wall_s": round(self.wall_s, 2),
            "requests_per_s": round(self.requests_per_s, 3),
            "latency_p50_s": round(self.latency(0.5), 3),
            "latency_p95_s": round(self.latency(0.95), 3),
            "first_token_p50_s": round(self.first_token(0.5), 3),
            "first_token_p95_s": round(self.first_token(0.95), 3),
            "completion_tokens": sum(o.completion_tokens for o in self.ok),
            "tokens_per_s": round(self.tokens_per_s, 2),
        }


async def run_load(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    total: int,
    concurrency: int,
    max_tokens: int,
    request_timeout: float = 120.0,
    run_timeout: float = 600.0,
    extra: dict[str, Any] | None = None,
) -> LoadReport:
    """Send `total` greedy streaming chat requests, `concurrency` at a time, cycling through
    `prompts`. Raises TimeoutError if the whole run exceeds `run_timeout` seconds."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=request_timeout, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = _chat_body(model, prompts[i % len(prompts)], max_tokens, extra)
                outcomes.append(await _one(client, Outcome(i, i % len(prompts)), body))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), run_timeout)
    report = LoadReport(concurrency, time.perf_counter() - start, sorted(outcomes, key=lambda o: o.index))
    return report


async def reference_outputs(base_url: str, model: str, prompts: Sequence[str], max_tokens: int,
                            extra: dict[str, Any] | None = None, timeout: float = 120.0) -> list[Outcome]:
    """Each prompt's greedy output from a single client, one request at a time."""
    report = await run_load(base_url, model, prompts, total=len(prompts), concurrency=1, max_tokens=max_tokens,
                            request_timeout=timeout, run_timeout=timeout * len(prompts), extra=extra)
    bad = [o for o in report.outcomes if o.status != 200 or o.error]
    if bad:
        raise RuntimeError(f"reference request failed: {bad[0]}")
    return report.outcomes


def _chat_body(model: str, prompt: str, max_tokens: int, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }


async def _one(client: Any, out: Outcome, body: dict[str, Any]) -> Outcome:
    """Stream one request to its end, filling `out`."""
    start = time.perf_counter()
    parts: list[str] = []
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            out.status = response.status_code
            if response.status_code != 200:
                out.error = (await response.aread()).decode(errors="replace")[:500]
                return out
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    break
                _take_event(json.loads(data), out, parts, start)
    except Exception as err:  # noqa: BLE001 (a load test reports failures, it does not stop at the first)
        out.error = f"{type(err).__name__}: {err}"
    finally:
        out.latency_s = time.perf_counter() - start
        out.text = "".join(parts)
    return out


def _take_event(event: dict[str, Any], out: Outcome, parts: list[str], start: float) -> None:
    if "error" in event:
        out.error = str(event["error"])
        return
    for choice in event.get("choices", []):
        text = choice.get("delta", {}).get("content")
        if text:
            if out.first_token_s is None:
                out.first_token_s = time.perf_counter() - start
            parts.append(text)
    if event.get("usage"):
        out.completion_tokens = int(event["usage"]["completion_tokens"])


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]
