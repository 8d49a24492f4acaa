"""Concurrency on the real server: a full queue answers 429 at once, clients that go away stop
their generation (streaming, non-streaming, still queued), and a bounded load test in which
every greedy output equals the single-client output and nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_serve_harness import (  # noqa: F401
    RunningServer,
    build_engine,
    chat_body,
    rss_bytes,
    run_server,
    server,
    tiny_dir,
    wait_until,
)

STEP_DELAY = 0.03  # seconds per target forward on the slow server
CHAT = "/v1/chat/completions"
CANCELLED_RUNNING = 'outpace_generations_cancelled_total{stage="running"}'
CANCELLED_QUEUED = 'outpace_generations_cancelled_total{stage="queued"}'


@pytest.fixture(scope="module")
def slow(tiny_dir: Path) -> Iterator[RunningServer]:  # noqa: F811
    """A server whose every step takes STEP_DELAY, with room for one waiting request."""
    with run_server(build_engine(tiny_dir, step_delay=STEP_DELAY), max_queue=1) as running:
        yield running


def idle(srv: RunningServer) -> None:
    assert wait_until(lambda: _gauges(srv) == (0, 0), timeout=30), "the server did not become idle"


def _gauges(srv: RunningServer) -> tuple[float, float]:
    m = srv.metrics()
    return m["outpace_active_generations"], m["outpace_queue_length"]


def counter(srv: RunningServer, key: str) -> Callable[[], float]:
    """A function returning how much `key` grew since now."""
    start = srv.metrics().get(key, 0.0)
    return lambda: srv.metrics().get(key, 0.0) - start


def post(srv: RunningServer, **kw: Any) -> httpx.Response:
    return httpx.post(f"{srv.url}{CHAT}", json=chat_body(temperature=0, **kw), timeout=60)


# ----------------------------------------------------------------------------- the queue


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_queue_answers_429_at_once(slow: RunningServer, stream: bool) -> None:
    idle(slow)
    rejected = counter(slow, "outpace_requests_rejected_total")
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, slow, max_tokens=80)  # over 2.4 s
        assert wait_until(lambda: _gauges(slow)[0] == 1, timeout=10)
        waiting = pool.submit(post, slow, max_tokens=3)
        assert wait_until(lambda: _gauges(slow)[1] == 1, timeout=10)
        start = time.perf_counter()
        refused = post(slow, max_tokens=3, stream=stream)
        elapsed = time.perf_counter() - start
        assert refused.status_code == 429
        assert elapsed < 1.5, f"429 took {elapsed:.2f}s"
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert refused.headers["retry-after"] == "1"
        assert _gauges(slow)[0] == 1, "the running generation should still be running"
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert rejected() == 1


# ----------------------------------------------------------------------------- disconnects


def test_a_client_leaving_mid_stream_stops_its_generation(slow: RunningServer) -> None:
    idle(slow)
    cancelled = counter(slow, CANCELLED_RUNNING)
    generated = counter(slow, "outpace_generated_tokens_total")
    with openai.OpenAI(base_url=f"{slow.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "w5 w6"}],
                                                max_tokens=200, temperature=0, stream=True)
        pieces = 0
        for chunk in stream:
            pieces += bool(chunk.choices and chunk.choices[0].delta.content)
            if pieces == 3:
                break
        stream.close()
    left = time.perf_counter()
    assert wait_until(lambda: cancelled() == 1, timeout=5)
    # 200 tokens take over 6 s; the generation stopped long before that.
    assert time.perf_counter() - left < 3
    assert wait_until(lambda: _gauges(slow) == (0, 0), timeout=5)
    assert 3 <= generated() < 100
    ok = post(slow, max_tokens=4)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4


def test_a_client_timing_out_on_a_whole_response_stops_its_generation(slow: RunningServer) -> None:
    idle(slow)
    cancelled = counter(slow, CANCELLED_RUNNING)
    closed = counter(slow, 'outpace_requests_total{endpoint="/v1/chat/completions",status="499"}')
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{slow.url}{CHAT}", json=chat_body(max_tokens=200, temperature=0), timeout=0.5)
    assert wait_until(lambda: cancelled() == 1, timeout=5)
    assert wait_until(lambda: closed() == 1, timeout=5)
    assert post(slow, max_tokens=2).status_code == 200


def test_a_client_leaving_while_queued_frees_its_place(slow: RunningServer) -> None:
    idle(slow)
    cancelled = counter(slow, CANCELLED_QUEUED)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, slow, max_tokens=40)
        assert wait_until(lambda: _gauges(slow)[0] == 1, timeout=10)
        with httpx.stream("POST", f"{slow.url}{CHAT}", json=chat_body(max_tokens=5, stream=True), timeout=30) as r:
            assert r.status_code == 200
            assert wait_until(lambda: _gauges(slow)[1] == 1, timeout=5)
        assert wait_until(lambda: cancelled() == 1, timeout=3)
        assert _gauges(slow) == (1, 0), "the running request goes on; the queue is empty again"
        assert running.result().status_code == 200


# ----------------------------------------------------------------------------- load


PROMPTS = [f"w{a} w{b} w{c} w{a} w{b}" for a, b, c in [(5, 6, 7), (8, 9, 10), (11, 12, 13), (14, 15, 16),
                                                      (17, 18, 19), (20, 21, 22), (23, 24, 25), (26, 27, 28)]]


MAX_TOKENS = 6


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def test_load_every_request_answers_with_the_single_client_output(server: RunningServer) -> None:  # noqa: F811
    from transformers import DynamicCache

    from outpace.serve.loadtest import reference_outputs, run_load
    from outpace.serve.scheduler import Job

    idle(server)
    expected = asyncio.run(reference_outputs(server.url, "tiny", PROMPTS, max_tokens=MAX_TOKENS))
    caches_before = live(DynamicCache)  # the prompt cache parked for the next turn (README: prompt caching)
    rss_before = rss_bytes()
    report = asyncio.run(run_load(server.url, "tiny", PROMPTS, total=100, concurrency=16, max_tokens=MAX_TOKENS,
                                  request_timeout=30, run_timeout=90))
    assert report.statuses == {200: 100}, [o.error for o in report.outcomes if o.error][:3]
    got = [(o.text, o.completion_tokens) for o in report.outcomes]
    assert got == [(expected[o.prompt].text, expected[o.prompt].completion_tokens) for o in report.outcomes]
    assert len({e.text for e in expected}) == len(PROMPTS) and all(e.completion_tokens > 0 for e in expected)
    assert report.wall_s < 90
    idle(server)
    assert live(Job) == 0 and live(DynamicCache) <= caches_before, "a finished request left state behind"
    growth = rss_bytes() - rss_before
    assert growth < 200 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB over 100 requests"
