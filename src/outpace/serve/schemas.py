"""Request and response bodies of the OpenAI-compatible API, as pydantic v2 models.

Requests are validated strictly (no "1" for 1, no 1.0 for an integer, no true for a number),
so a wrong type is a 400, never a silent coercion. Fields of the OpenAI API that outpace does
not implement are accepted only with their neutral value (see `UNSUPPORTED`); other unknown
fields are ignored, as many clients send extras (`user`, `metadata`, `store`, ...).

Extension fields (not in the OpenAI API):
  top_k        int >= 0, 0 disables it (as in vLLM).
  speculative  false | "off" | true | "on" | {"drafter": "default"|"none"|NAME, "draft_length": k,
               "adaptive": bool}: per-request choice of speculation; the response echoes it with
               its statistics. The server loads one drafter at start; a request picks it
               ("default", or its name) or none. "adaptive" picks each step's draft length (at
               most draft_length) from measured costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 4
MAX_DRAFT_LENGTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_STRICT = ConfigDict(strict=True, extra="forbid")
_STRICT_OPEN = ConfigDict(strict=True, extra="allow")


def _is_zero(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0)


def _is_empty(v: Any) -> bool:
    return v is None or v == {} or v == [] or v is False


#: Known OpenAI fields outpace does not implement: field -> "is this value harmless?".
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "presence_penalty": _is_zero,
    "frequency_penalty": _is_zero,
    "logit_bias": _is_empty,
    "logprobs": lambda v: v is None or v is False or v == 0,
    "top_logprobs": _is_zero,
    "echo": _is_empty,
    "best_of": lambda v: v is None or v == 1,
    "suffix": lambda v: v is None or v == "",
    "tools": _is_empty,
    "functions": _is_empty,
    "tool_choice": lambda v: v is None or v == "none",
    "response_format": lambda v: v is None or v == {"type": "text"},
    "audio": _is_empty,
    "modalities": lambda v: v is None or v == ["text"],
}


# ----------------------------------------------------------------------------- requests


class SpeculativeOptions(BaseModel):
    """Per-request speculation. `drafter`: "default" (the server's drafter), "none" (plain
    autoregressive decoding), or the server drafter's own name. `draft_length`: tokens (or tree
    nodes) verified per step; `adaptive`: choose each step's length up to it from measured
    costs. None keeps the server's setting."""

    model_config = _STRICT

    drafter: str = "default"
    draft_length: int | None = Field(default=None, ge=0, le=MAX_DRAFT_LENGTH)
    adaptive: bool | None = None


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = _STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message. Content is a string or a list of text parts (joined with no separator)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if isinstance(v, list):
            for part in v:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"only text content parts are supported, got type {kind!r}")
        elif not isinstance(v, str):
            raise PydanticCustomError("content_type", "content must be a string or a list of text parts")
        return v

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_template_message(self) -> dict[str, str]:
        """The message as a chat template expects it ('developer' is OpenAI's new 'system')."""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class _GenerationRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = _STRICT_OPEN

    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    speculative: SpeculativeOptions | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError(f"only n=1 is supported, got {v}")
        return v

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        if v is not None and not isinstance(v, list):
            raise PydanticCustomError("stop_type", "stop must be a string or a list of strings")
        if isinstance(v, list) and len(v) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported, got {len(v)}")
        return v

    @field_validator("speculative", mode="before")
    @classmethod
    def _speculative_shorthand(cls, v: Any) -> Any:
        if v is False or v in ("off", "none"):
            return {"drafter": "none"}
        if v is True or v in ("on", "default"):
            return {}
        if isinstance(v, str):
            return {"drafter": v}
        return v

    def unsupported(self) -> tuple[str, Any] | None:
        """The first field of `UNSUPPORTED` sent with a value outpace cannot honour, if any."""
        extra = self.model_extra or {}
        for name, harmless in UNSUPPORTED.items():
            if not harmless(extra.get(name)):
                return name, extra[name]
        return None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_GenerationRequest):
    """`prompt` is a string, a list holding one string, or a list of token ids."""

    prompt: str | list[int]

    @field_validator("prompt", mode="before")
    @classmethod
    def _single_prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and v and all(isinstance(p, str) for p in v):
            if len(v) > 1:
                raise ValueError(f"batched prompts are not supported (got {len(v)}); send one per request")
            return v[0]
        if isinstance(v, list) and not v:
            raise ValueError("the prompt is empty")
        return v


# ----------------------------------------------------------------------------- responses


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens an earlier request left in the KV cache (not recomputed)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class SpeculativeTimes(BaseModel):
    prefill: float
    draft: float
    verify: float
    other: float
    total: float


class SpeculativeReport(BaseModel):
    """The request's speculation settings and what they achieved (the `speculative` echo)."""

    enabled: bool
    drafter: str
    draft_length: int
    adaptive: bool
    steps: int
    tau: float  # mean tokens committed per target forward
    acceptance_rate: float  # accepted / proposed draft positions
    acceptance_by_position: list[float]
    tokens_per_s: float
    time_s: SpeculativeTimes


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    speculative: SpeculativeReport


class ChatDelta(BaseModel):
    """A streamed piece of the assistant message; unset fields are left out, as OpenAI does."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer
    def _set_fields_only(self) -> dict[str, str]:
        return {k: v for k, v in (("role", self.role), ("content", self.content)) if v is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    speculative: SpeculativeReport | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    """A text completion; also the shape of each streamed chunk (`usage` then None)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None
    speculative: SpeculativeReport | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "outpace"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    model: str
    queue_length: int
    active_generations: int
