"""The FastAPI application: routes and the glue between them.

`create_app(engine)` takes an already-built `outpace.engine.Engine`, so tests and embedders
need no command line. Planning (validation, tokenization, context checks) is in `service`,
serialization of generations in `scheduler`, response shapes in `responses`, errors in
`errors`; this module wires them to HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from outpace import __version__
from outpace.errors import OutpaceError
from outpace.serve.errors import (
    APIError,
    bad_request,
    install_error_handlers,
    internal_error,
    model_not_found,
    queue_full,
    unavailable,
)
from outpace.serve.metrics import CONTENT_TYPE, Metrics
from outpace.serve.responses import ChatFormat, CompletionFormat, ResponseFormat
from outpace.serve.scheduler import Job, QueueFull, Scheduler, SchedulerClosed
from outpace.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    Health,
    ModelCard,
    ModelList,
    _GenerationRequest,
)
from outpace.serve.service import (
    GenerationService,
    Plan,
    ServeSettings,
    finish_reason,
    usage,
)
from outpace.serve.transport import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    EventStreamResponse,
    RequestMetricsMiddleware,
    sse,
    unless_disconnected,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from outpace.decoder import Chunk
    from outpace.engine import Engine

log = logging.getLogger(__name__)


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """An ASGI app serving `engine` (its generation worker starts with the app's lifespan)."""
    settings = settings or ServeSettings(model_id=engine.target.name)
    metrics = Metrics(settings.model_id, engine.drafter_name, __version__)
    scheduler = Scheduler(settings.max_queue)
    api = Api(GenerationService(engine, settings, metrics), scheduler, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            scheduler.close()

    app = FastAPI(title="outpace", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API with lossless speculative decoding.")
    app.state.metrics, app.state.scheduler, app.state.api = metrics, scheduler, api
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    _add_routes(app, api)
    return app


class Api:
    """What the routes do, with the service, scheduler and metrics they share."""

    def __init__(self, service: GenerationService, scheduler: Scheduler, metrics: Metrics) -> None:
        self.service = service
        self.scheduler = scheduler
        self.metrics = metrics
        self.model_id = service.settings.model_id

    async def answer(self, request: Request, plan: Plan, fmt: ResponseFormat, body: _GenerationRequest) -> Response:
        """Queue the plan and answer: a stream of events, or one JSON body."""
        job = self.submit(plan)
        if body.stream:
            events = self.events(job, plan, fmt, body.include_usage)
            return EventStreamResponse(events, headers=SSE_HEADERS, on_close=lambda: self.scheduler.cancel(job))
        try:
            finished, whole = await unless_disconnected(request, self.collect(job, plan, fmt))
        finally:
            self.scheduler.cancel(job)
        if not finished or whole is None:
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(whole.model_dump())

    def submit(self, plan: Plan) -> Job[Chunk]:
        self.scheduler.start()
        try:
            return self.scheduler.submit(lambda: self.service.work(plan))
        except QueueFull:
            raise queue_full(self.scheduler.capacity) from None
        except SchedulerClosed:
            raise unavailable("The server is shutting down.") from None

    async def collect(self, job: Job[Chunk], plan: Plan, fmt: ResponseFormat) -> BaseModel:
        """The whole response, once the generation has ended."""
        parts: list[str] = []
        tokens = 0
        last: Chunk | None = None
        try:
            async for chunk in job.items():
                parts.append(chunk.text)
                tokens += len(chunk.tokens)
                last = chunk if chunk.stats is not None else last
        except Exception as exc:  # noqa: BLE001 (every failure becomes an OpenAI-shaped error; the server keeps serving)
            raise as_api_error(exc) from None
        if last is None or last.stats is None:
            raise internal_error()
        report = self.service.report(plan, last.stats)
        return fmt.whole("".join(parts), finish_reason(last.finish_reason), usage(plan, tokens, last.stats), report)

    async def events(self, job: Job[Chunk], plan: Plan, fmt: ResponseFormat, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events for one generation; closing this generator cancels the job."""
        tokens = 0
        try:
            opening = fmt.opening()
            if opening is not None:
                yield sse(opening.model_dump_json())
            async for chunk in job.items():
                tokens += len(chunk.tokens)
                if chunk.text:
                    yield sse(fmt.delta(chunk.text).model_dump_json())
                if chunk.stats is not None:
                    closing = fmt.closing(finish_reason(chunk.finish_reason), self.service.report(plan, chunk.stats))
                    yield sse(closing.model_dump_json())
                    if include_usage:
                        yield sse(fmt.usage(usage(plan, tokens, chunk.stats)).model_dump_json())
            yield sse("[DONE]")
        except Exception as exc:  # noqa: BLE001 (mid-stream failures become an error event, not a dropped connection)
            err = as_api_error(exc)
            self.metrics.count_error(err.type, err.code)
            yield sse(err.body().model_dump_json())
            yield sse("[DONE]")
        finally:
            self.scheduler.cancel(job)

    def health(self) -> tuple[int, Health]:
        stats = self.scheduler.stats()
        body = Health(status="ok" if stats.alive else "unavailable", model=self.model_id,
                      queue_length=stats.queue_length, active_generations=stats.active)
        return (200 if stats.alive else 503), body

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_id, created=0)])


def as_api_error(exc: BaseException) -> APIError:
    """What the client is told about an exception raised while generating."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, OutpaceError):
        return bad_request(str(exc))
    if isinstance(exc, SchedulerClosed):
        return unavailable("The server is shutting down.")
    log.error("generation failed", exc_info=exc)
    return internal_error()


def _add_routes(app: FastAPI, api: Api) -> None:
    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        plan = api.service.plan_chat(body)
        return await api.answer(request, plan, ChatFormat(api.model_id), body)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        plan = api.service.plan_completion(body)
        return await api.answer(request, plan, CompletionFormat(api.model_id), body)

    @app.get("/v1/models")
    async def list_models() -> ModelList:
        return api.models()

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> ModelCard:
        if model not in api.service.model_ids:
            raise model_not_found(model)
        return ModelCard(id=api.model_id, created=0)

    @app.get("/health", response_model=None)
    async def health() -> Response:
        status, body = api.health()
        return JSONResponse(body.model_dump(), status_code=status)

    @app.get("/metrics", response_model=None)
    async def metrics() -> Response:
        text = api.metrics.render(api.scheduler.stats())
        return PlainTextResponse(text, media_type=CONTENT_TYPE)
