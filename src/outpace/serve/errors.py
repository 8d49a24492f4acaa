"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.

Every failure the server answers goes through `APIError`, so the shape, the status and the
error metrics stay consistent: validation errors (pydantic, bad JSON), unknown routes and
methods, full queues, and unexpected exceptions alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from outpace.serve.schemas import ErrorDetail, ErrorResponse

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An error response: HTTP status plus the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, INVALID_REQUEST, param, code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404, f"The model `{model}` does not exist or you do not have access to it.", INVALID_REQUEST, "model",
        "model_not_found",
    )


def queue_full(capacity: int) -> APIError:
    return APIError(
        429, f"The server is busy: its queue of {capacity} waiting requests is full; retry shortly.",
        RATE_LIMIT, None, "rate_limit_exceeded", headers={"Retry-After": "1"},
    )


def unavailable(message: str) -> APIError:
    return APIError(503, message, SERVER_ERROR, None, "service_unavailable")


def internal_error() -> APIError:
    return APIError(500, "The server had an error while processing your request.", SERVER_ERROR, None, "internal_error")


# ----------------------------------------------------------------------------- validation


#: pydantic error types -> OpenAI-style error codes.
_CODES = {
    "missing": "missing_required_parameter",
    "json_invalid": "invalid_json",
    "model_attributes_type": "invalid_type",
    "model_type": "invalid_type",
    "dict_type": "invalid_type",
    "extra_forbidden": "unknown_parameter",
    "literal_error": "invalid_value",
    "value_error": "invalid_value",
    "too_short": "invalid_value",
    "greater_than": "invalid_value",
    "greater_than_equal": "invalid_value",
    "less_than": "invalid_value",
    "less_than_equal": "invalid_value",
}

#: Location parts pydantic adds for union members and validators; they are not field names.
_TAG_MARKS = ("[", "(", "-")
_TAG_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "body"}


def from_validation_errors(errors: Sequence[Any]) -> APIError:
    """The first of pydantic's (or FastAPI's) validation errors, as a 400."""
    if not errors:
        return bad_request("invalid request body", code="invalid_request")
    err = dict(errors[0])
    kind = str(err.get("type", ""))
    param = None if kind == "json_invalid" else param_from_loc(err.get("loc", ()))
    if kind == "json_invalid":
        problem = _json_problem(err)
        return bad_request(f"We could not parse the JSON body of your request: {problem}", None, "invalid_json")
    message = _validation_message(kind, param, str(err.get("msg", "invalid value")))
    code = _CODES.get(kind, "invalid_type" if kind.endswith("_type") else "invalid_value")
    return bad_request(message, param, code)


def _validation_message(kind: str, param: str | None, msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if param is None and kind == "missing":
        return "The request body is empty; send a JSON object."
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "The request body must be a JSON object, sent with Content-Type: application/json."
    if param is None:
        return msg
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    return f"Invalid value for '{param}': {msg}"


def _json_problem(err: dict[str, Any]) -> str:
    loc = err.get("loc", ())
    where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
    return f"{(err.get('ctx') or {}).get('error', err.get('msg'))}{where}"


def param_from_loc(loc: Iterable[Any]) -> str | None:
    """'messages[0].role' from a pydantic location, without body/union-member parts."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part not in _TAG_NAMES and not any(m in part for m in _TAG_MARKS):
            out += f".{part}" if out else part
    return out or None


# ----------------------------------------------------------------------------- handlers


def error_response(err: APIError, request: Request | None = None) -> JSONResponse:
    """The JSON response for `err`; counts it in the app's metrics when there is a request."""
    from starlette.responses import JSONResponse

    metrics = getattr(getattr(request, "app", None), "state", None)
    metrics = getattr(metrics, "metrics", None)
    if metrics is not None:
        metrics.count_error(err.type, err.code)
    return JSONResponse(err.body().model_dump(), status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error (ours, validation, routing, unexpected) in the OpenAI shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return error_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_errors(exc.errors()), request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error_response(_from_http(exc, request), request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(internal_error(), request)

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _from_http(exc: Any, request: Request) -> APIError:
    """Starlette's routing errors (404, 405, ...) as OpenAI errors."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return APIError(404, f"Invalid URL ({where})", INVALID_REQUEST, None, "unknown_url")
    if exc.status_code == 405:
        return APIError(405, f"Method not allowed ({where})", INVALID_REQUEST, None, "method_not_allowed",
                        headers=dict(exc.headers or {}))
    kind = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
    return APIError(exc.status_code, str(exc.detail), kind, None, None, headers=dict(exc.headers or {}))
