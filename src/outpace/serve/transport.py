"""ASGI plumbing: server-sent events that notice a vanished client, racing a coroutine against
a disconnect, and request metrics as a pure ASGI middleware (which, unlike Starlette's
BaseHTTPMiddleware, does not interfere with streaming or cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from starlette.responses import StreamingResponse

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from outpace.serve.metrics import Metrics

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: str) -> str:
    """One server-sent event carrying `data` (a JSON document or [DONE])."""
    return f"data: {data}\n\n"


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that always watches for the client going away.

    Starlette watches for disconnects only for older ASGI spec versions; here the stream and a
    disconnect listener always run together, and the body iterator is closed as soon as either
    ends, so the generator's `finally` (which cancels the generation) runs at once.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], headers: Mapping[str, str] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__(content, headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # OSError: the client is gone
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            if self.on_close is not None:  # also when the body was never started
                self.on_close()


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (call after the request body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await `work` unless the client disconnects first: (finished, result). On a disconnect
    `work` is cancelled (its `finally` blocks run) before this returns."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


#: Routes reported under their own label; anything else is "other", so a scan of random URLs
#: cannot grow the metrics without bound.
KNOWN_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

#: Status recorded when the client went away before any response started (nginx's convention).
CLIENT_CLOSED = 499


def endpoint_label(path: str) -> str:
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return "other"


class RequestMetricsMiddleware:
    """Counts every HTTP request by endpoint and status, and the time spent answering it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status = status or 500
            raise
        finally:
            label = endpoint_label(str(scope.get("path", "")))
            self.metrics.count_request(label, status or CLIENT_CLOSED, time.perf_counter() - start)

