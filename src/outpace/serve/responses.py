"""The two OpenAI response families, chat and text completions, behind one interface.

A `ResponseFormat` builds, for one request, every object the HTTP layer sends: the whole
response, or the stream of chunks (an optional opening chunk, text deltas, a closing chunk with
the finish reason and the `speculative` echo, and an optional usage chunk).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from pydantic import BaseModel

from outpace.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChoice,
    SpeculativeReport,
    Usage,
)

FINGERPRINT = "outpace"


class ResponseFormat(Protocol):
    """Builds the response objects of one request."""

    def opening(self) -> BaseModel | None: ...

    def delta(self, text: str) -> BaseModel: ...

    def closing(self, finish_reason: str, report: SpeculativeReport) -> BaseModel: ...

    def usage(self, usage: Usage) -> BaseModel: ...

    def whole(self, text: str, finish_reason: str, usage: Usage, report: SpeculativeReport) -> BaseModel: ...


class _Base:
    prefix = "cmpl"

    def __init__(self, model: str) -> None:
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model, "system_fingerprint": FINGERPRINT}


class ChatFormat(_Base):
    """`chat.completion` and `chat.completion.chunk` objects."""

    prefix = "chatcmpl"

    def opening(self) -> ChatCompletionChunk:
        return self._chunk(ChatDelta(role="assistant", content=""))

    def delta(self, text: str) -> ChatCompletionChunk:
        return self._chunk(ChatDelta(content=text))

    def closing(self, finish_reason: str, report: SpeculativeReport) -> ChatCompletionChunk:
        return self._chunk(ChatDelta(), finish_reason, report)

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(**self._head(), choices=[], usage=usage)

    def whole(self, text: str, finish_reason: str, usage: Usage, report: SpeculativeReport) -> ChatCompletion:
        choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason)
        return ChatCompletion(**self._head(), choices=[choice], usage=usage, speculative=report)

    def _chunk(self, delta: ChatDelta, finish: str | None = None,
               report: SpeculativeReport | None = None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=finish)
        return ChatCompletionChunk(**self._head(), choices=[choice], speculative=report)


class CompletionFormat(_Base):
    """`text_completion` objects, whole or streamed."""

    def opening(self) -> None:
        return None

    def delta(self, text: str) -> Completion:
        return self._completion(text)

    def closing(self, finish_reason: str, report: SpeculativeReport) -> Completion:
        return self._completion("", finish_reason, report=report)

    def usage(self, usage: Usage) -> Completion:
        return Completion(**self._head(), choices=[], usage=usage)

    def whole(self, text: str, finish_reason: str, usage: Usage, report: SpeculativeReport) -> Completion:
        return self._completion(text, finish_reason, usage, report)

    def _completion(self, text: str, finish: str | None = None, usage: Usage | None = None,
                    report: SpeculativeReport | None = None) -> Completion:
        choice = CompletionChoice(text=text, finish_reason=finish)
        return Completion(**self._head(), choices=[choice], usage=usage, speculative=report)
