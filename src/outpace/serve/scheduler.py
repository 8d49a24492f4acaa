"""Serialized generation: one worker thread runs one job at a time from a bounded FIFO queue.

The decoder and its drafter hold per-generation state (KV caches, the draft model's cache), so
two generations must never interleave. The scheduler knows nothing of HTTP or models: a job is
a callable returning an iterator (a generator), run on the worker thread; its items are handed
to the asyncio loop that submitted it. Cancelling a running job closes its iterator between two
items, which for `Decoder.stream` is between two decoding steps.

Admission: a job is accepted when fewer than `max_queue` jobs wait (the running one does not
count), or when the worker is idle; otherwise `submit` raises `QueueFull` at once.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[], Iterator[T]]
JobState = Literal["queued", "running", "done"]
EndReason = Literal["completed", "cancelled", "failed", "shutdown"]


class QueueFull(Exception):
    """The queue holds max_queue waiting jobs already."""


class SchedulerClosed(Exception):
    """The scheduler is shutting down; the job was not (or will not be) run to its end."""


@dataclass(frozen=True)
class _Event:
    kind: Literal["item", "error", "end"]
    value: Any = None


@dataclass(frozen=True)
class SchedulerStats:
    """A consistent snapshot of the scheduler's state and lifetime counters."""

    queue_length: int
    capacity: int
    active: int
    alive: bool
    accepted: int
    rejected: int
    completed: int
    failed: int
    cancelled_queued: int
    cancelled_running: int


class Job(Generic[T]):
    """One submitted unit of work; iterate `items()` on the submitting loop to receive it."""

    def __init__(self, job_id: int, work: Work[T], loop: asyncio.AbstractEventLoop) -> None:
        self.id = job_id
        self.work = work
        self.state: JobState = "queued"
        self.end_reason: EndReason | None = None
        self._loop = loop
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._cancel = threading.Event()
        self._shutdown = False

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    async def items(self) -> AsyncIterator[T]:
        """The job's items in order. Raises the job's exception if it failed, and
        `SchedulerClosed` if the server shut down before the job ended."""
        while True:
            event = await self._events.get()
            if event.kind == "item":
                yield event.value
            elif event.kind == "error":
                raise event.value
            else:
                if event.value == "shutdown":
                    raise SchedulerClosed("the server is shutting down")
                return

    def _post(self, event: _Event) -> None:
        """Hand an event to the submitting loop (thread-safe). A closed loop means nobody
        listens any more: the job is then cancelled."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            self._cancel.set()


class Scheduler:
    """A bounded FIFO queue in front of a single worker thread."""

    def __init__(self, max_queue: int, name: str = "outpace-generation") -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.capacity = max_queue
        self._name = name
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job[Any]] = collections.deque()
        self._running: Job[Any] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._counts = collections.Counter[str]()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread (once)."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._worker, name=self._name, daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, end waiting ones with `SchedulerClosed`, stop the running one at its
        next step, and wait up to `timeout` seconds for the worker to exit."""
        with self._cond:
            self._closed = True
            while self._waiting:
                self._end(self._waiting.popleft(), "shutdown")
            if self._running is not None:
                self._running._shutdown = True
                self._running._cancel.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the API

    def submit(self, work: Work[T], loop: asyncio.AbstractEventLoop | None = None) -> Job[T]:
        """Queue `work`; raises `QueueFull` or `SchedulerClosed` immediately instead of waiting."""
        loop = loop or asyncio.get_running_loop()
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the server is shutting down")
            idle = self._running is None and not self._waiting
            if len(self._waiting) >= self.capacity and not idle:
                self._counts["rejected"] += 1
                raise QueueFull(f"{len(self._waiting)} jobs are waiting (max_queue {self.capacity})")
            job: Job[T] = Job(next(self._ids), work, loop)
            self._waiting.append(job)
            self._counts["accepted"] += 1
            self._cond.notify()
        return job

    def cancel(self, job: Job[Any]) -> None:
        """Stop `job`: a waiting job leaves the queue now, a running one stops before its next
        item. No effect on a job that has ended."""
        with self._cond:
            if job.state == "queued" and job in self._waiting:
                self._waiting.remove(job)
                self._counts["cancelled_queued"] += 1
                self._end(job, "cancelled")
            elif job.state == "running":
                job._cancel.set()

    def stats(self) -> SchedulerStats:
        with self._cond:
            c = self._counts
            return SchedulerStats(
                queue_length=len(self._waiting),
                capacity=self.capacity,
                active=int(self._running is not None),
                alive=self._thread is not None and self._thread.is_alive() and not self._closed,
                accepted=c["accepted"],
                rejected=c["rejected"],
                completed=c["completed"],
                failed=c["failed"],
                cancelled_queued=c["cancelled_queued"],
                cancelled_running=c["cancelled"],
            )

    # ------------------------------------------------------------------ the worker

    def _worker(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            reason = self._run(job)
            if reason == "cancelled" and job._shutdown:
                reason = "shutdown"
            with self._cond:
                self._counts[reason] += 1
                self._running = None
                self._end(job, reason)
            del job  # hold no finished job (and its prompt) while waiting for the next

    def _next_job(self) -> Job[Any] | None:
        """Block until a job waits (and mark it running), or return None once closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self._waiting.popleft()
            job.state = "running"
            self._running = job
            return job

    def _run(self, job: Job[Any]) -> EndReason:
        """Iterate the job's work, posting each item, checking for cancellation between items."""
        iterator: Iterator[Any] | None = None
        try:
            iterator = job.work()
            while not job.cancel_requested:
                try:
                    item = next(iterator)
                except StopIteration:
                    return "completed"
                job._post(_Event("item", item))
            return "cancelled"
        except Exception as err:  # the job's failure is the job's business, not the worker's
            log.debug("job %d failed", job.id, exc_info=True)
            job._post(_Event("error", err))
            return "failed"
        finally:
            _close(iterator)

    def _end(self, job: Job[Any], reason: EndReason) -> None:
        """Mark `job` done and tell its consumer (call with the lock held)."""
        job.state = "done"
        job.end_reason = reason
        job._post(_Event("end", reason))


def _close(iterator: Iterator[Any] | None) -> None:
    """Close a generator so its `finally` blocks run now, on this thread."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.warning("closing a generation raised", exc_info=True)
