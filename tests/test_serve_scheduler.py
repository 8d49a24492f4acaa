"""The scheduler on its own: FIFO order, one job at a time, bounded admission, cancellation of
waiting and running jobs, failures, shutdown. No model and no HTTP: jobs are plain generators."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from outpace.serve.scheduler import Job, QueueFull, Scheduler, SchedulerClosed

TIMEOUT = 10.0


async def drain(job: Job[Any]) -> list[Any]:
    return [item async for item in job.items()]


def gated(gate: threading.Event, log: list[str], name: str) -> Iterator[str]:
    """A job that yields once, then waits for `gate` before finishing."""
    log.append(f"start {name}")
    yield name
    assert gate.wait(TIMEOUT)
    log.append(f"end {name}")


def wait_for(predicate: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    s = Scheduler(max_queue=2)
    s.start()
    yield s
    s.close()


def test_jobs_run_one_at_a_time_in_fifo_order() -> None:
    scheduler = Scheduler(max_queue=3)
    scheduler.start()
    log: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> Iterator[str]:
        with lock:
            log.append(f"start {name}")
        time.sleep(0.02)
        yield name
        with lock:
            log.append(f"end {name}")

    async def main() -> list[list[str]]:
        jobs = [scheduler.submit(lambda n=n: work(n)) for n in "abc"]
        return await asyncio.wait_for(asyncio.gather(*(drain(j) for j in jobs)), TIMEOUT)

    try:
        assert asyncio.run(main()) == [["a"], ["b"], ["c"]]
    finally:
        scheduler.close()
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]
    assert scheduler.stats().completed == 3


def test_a_full_queue_refuses_at_once(scheduler: Scheduler) -> None:
    gate, log = threading.Event(), []

    async def main() -> None:
        running = scheduler.submit(lambda: gated(gate, log, "r"))
        wait_for(lambda: scheduler.stats().active == 1)
        waiting = [scheduler.submit(lambda: iter(["w"])) for _ in range(2)]
        start = time.perf_counter()
        with pytest.raises(QueueFull):
            scheduler.submit(lambda: iter(["x"]))
        assert time.perf_counter() - start < 0.5
        gate.set()
        assert await asyncio.wait_for(drain(running), TIMEOUT) == ["r"]
        for job in waiting:
            assert await asyncio.wait_for(drain(job), TIMEOUT) == ["w"]

    asyncio.run(main())
    stats = scheduler.stats()
    assert (stats.rejected, stats.accepted, stats.completed) == (1, 3, 3)


def test_zero_queue_admits_only_when_idle() -> None:
    s = Scheduler(max_queue=0)
    s.start()
    gate, log = threading.Event(), []

    async def main() -> None:
        job = s.submit(lambda: gated(gate, log, "only"))
        with pytest.raises(QueueFull):
            s.submit(lambda: iter(["x"]))
        gate.set()
        await asyncio.wait_for(drain(job), TIMEOUT)
        wait_for(lambda: s.stats().active == 0)
        assert await asyncio.wait_for(drain(s.submit(lambda: iter(["again"]))), TIMEOUT) == ["again"]

    try:
        asyncio.run(main())
    finally:
        s.close()


def test_cancelling_a_waiting_job_frees_its_place_and_never_runs_it(scheduler: Scheduler) -> None:
    gate, log = threading.Event(), []

    async def main() -> None:
        running = scheduler.submit(lambda: gated(gate, log, "r"))
        wait_for(lambda: scheduler.stats().active == 1)
        waiting = scheduler.submit(lambda: gated(gate, log, "w"))
        assert scheduler.stats().queue_length == 1
        scheduler.cancel(waiting)
        assert scheduler.stats().queue_length == 0
        assert await asyncio.wait_for(drain(waiting), TIMEOUT) == []
        gate.set()
        await asyncio.wait_for(drain(running), TIMEOUT)

    asyncio.run(main())
    assert "start w" not in log
    assert "resumed after close" not in log
    assert scheduler.stats().cancelled_queued == 1


def test_cancelling_a_running_job_closes_its_generator_between_items(scheduler: Scheduler) -> None:
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    async def main() -> None:
        job = scheduler.submit(endless)
        seen = []
        async for item in job.items():
            seen.append(item)
            if len(seen) == 3:
                scheduler.cancel(job)
        assert closed.wait(TIMEOUT)
        follow = scheduler.submit(lambda: iter(["next"]))
        assert await asyncio.wait_for(drain(follow), TIMEOUT) == ["next"]

    asyncio.run(main())
    assert len(produced) < 50
    stats = scheduler.stats()
    assert (stats.cancelled_running, stats.active, stats.completed) == (1, 0, 1)


def test_a_failing_job_reports_its_error_and_the_worker_goes_on(scheduler: Scheduler) -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await asyncio.wait_for(drain(scheduler.submit(broken)), TIMEOUT)
        assert await asyncio.wait_for(drain(scheduler.submit(lambda: iter([2]))), TIMEOUT) == [2]

    asyncio.run(main())
    assert scheduler.stats().failed == 1
    assert scheduler.stats().alive


def test_close_ends_waiting_jobs_and_refuses_new_ones() -> None:
    s = Scheduler(max_queue=4)
    s.start()
    gate, log = threading.Event(), []

    def long_running() -> Iterator[str]:
        yield from gated(gate, log, "r")
        yield "more"
        log.append("resumed after close")
        yield "last"

    async def main() -> None:
        running = s.submit(long_running)
        wait_for(lambda: s.stats().active == 1)
        waiting = s.submit(lambda: gated(gate, log, "w"))
        closer = threading.Thread(target=s.close)
        closer.start()
        wait_for(lambda: not s.stats().alive)
        with pytest.raises(SchedulerClosed):
            await asyncio.wait_for(drain(waiting), TIMEOUT)
        gate.set()
        with pytest.raises(SchedulerClosed):
            await asyncio.wait_for(drain(running), TIMEOUT)
        closer.join(TIMEOUT)
        with pytest.raises(SchedulerClosed):
            s.submit(lambda: iter([]))

    asyncio.run(main())
    assert "start w" not in log
    assert "resumed after close" not in log


def test_negative_queue_is_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(max_queue=-1)
