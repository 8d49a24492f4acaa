"""Malformed requests over raw HTTP: each gets its status and an OpenAI-shaped error, and the
server keeps serving afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import httpx
import pytest
from test_serve_harness import (  # noqa: F401
    POISON,
    RunningServer,
    build_engine,
    chat_body,
    run_server,
    server,
    tiny_dir,
)

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
INVALID = "invalid_request_error"  # OpenAI's type for 400, 404 and 405 alike


class Case(NamedTuple):
    """One malformed request and the error it must get."""

    name: str
    body: Any  # dict/list/str: sent as JSON; bytes: sent raw as JSON; None: no body
    status: int
    param: str | None
    code: str
    path: str = CHAT
    method: str = "POST"
    headers: Mapping[str, str] = MappingProxyType({})
    kind: str = INVALID


def msgs(*messages: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": list(messages), "max_tokens": 4}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def completion(**fields: Any) -> Any:
    return {"model": "tiny", "max_tokens": 4, **fields}


def comp(name: str, body: Any, status: int, param: str | None, code: str) -> Case:
    return Case(name, body, status, param, code, path=COMPLETIONS)


MISSING, TYPE, VALUE = "missing_required_parameter", "invalid_type", "invalid_value"
UNSUPPORTED, TOO_LONG = "unsupported_parameter", "context_length_exceeded"
IMAGE = [{"type": "image_url", "image_url": {"url": "http://x"}}]

CASES: list[Case] = [
    # the body itself
    Case("bad json", b'{"model": "tiny", "messages": [', 400, None, "invalid_json"),
    Case("empty body", b"", 400, None, MISSING),
    Case("body is a list", [1, 2], 400, None, TYPE),
    Case("body is a string", "hello", 400, None, TYPE),
    Case("not json content type", json.dumps(chat_body()).encode(), 400, None, TYPE,
         headers={"content-type": "text/plain"}),
    # model
    Case("missing model", {"messages": [user("w5")]}, 400, "model", MISSING),
    Case("model not a string", {**chat_body(), "model": 7}, 400, "model", TYPE),
    Case("unknown model", {**chat_body(), "model": "gpt-4o"}, 404, "model", "model_not_found"),
    # messages
    Case("missing messages", {"model": "tiny"}, 400, "messages", MISSING),
    Case("messages not a list", {"model": "tiny", "messages": "w5"}, 400, "messages", TYPE),
    Case("empty messages", msgs(), 400, "messages", VALUE),
    Case("message not an object", msgs("w5"), 400, "messages[0]", TYPE),
    Case("unknown role", msgs({"role": "wizard", "content": "w5"}), 400, "messages[0].role", VALUE),
    Case("missing role", msgs({"content": "w5"}), 400, "messages[0].role", MISSING),
    Case("content a number", msgs(user(5)), 400, "messages[0].content", TYPE),
    Case("image content", msgs(user(IMAGE)), 400, "messages[0].content", VALUE),
    Case("only empty contents", msgs(user(""), user("  ")), 400, "messages", VALUE),
    # sampling parameters
    Case("temperature negative", chat_body(temperature=-0.1), 400, "temperature", VALUE),
    Case("temperature above 2", chat_body(temperature=2.5), 400, "temperature", VALUE),
    Case("temperature a string", chat_body(temperature="0.5"), 400, "temperature", TYPE),
    Case("top_p zero", chat_body(top_p=0), 400, "top_p", VALUE),
    Case("top_p above 1", chat_body(top_p=1.5), 400, "top_p", VALUE),
    Case("top_k negative", chat_body(top_k=-1), 400, "top_k", VALUE),
    Case("max_tokens zero", chat_body(max_tokens=0), 400, "max_tokens", VALUE),
    Case("max_tokens negative", chat_body(max_tokens=-3), 400, "max_tokens", VALUE),
    Case("max_tokens a float", chat_body(max_tokens=2.5), 400, "max_tokens", TYPE),
    Case("max_tokens a bool", chat_body(max_tokens=True), 400, "max_tokens", TYPE),
    Case("max_completion_tokens zero", chat_body(max_completion_tokens=0), 400, "max_completion_tokens", VALUE),
    Case("n two", chat_body(n=2), 400, "n", VALUE),
    Case("stop a number", chat_body(stop=3), 400, "stop", TYPE),
    Case("five stops", chat_body(stop=list("abcde")), 400, "stop", VALUE),
    Case("seed a string", chat_body(seed="7"), 400, "seed", TYPE),
    Case("seed beyond int64", chat_body(seed=2**70), 400, "seed", VALUE),
    Case("stream a string", chat_body(stream="yes"), 400, "stream", TYPE),
    Case("stream_options wrong", chat_body(stream=True, stream_options={"include_usage": "y"}), 400,
         "stream_options.include_usage", TYPE),
    # the context window
    Case("prompt too long", chat_body(" ".join(["w5"] * 300)), 400, "messages", TOO_LONG),
    Case("max_tokens too long", chat_body(max_tokens=1000), 400, "max_tokens", TOO_LONG),
    # the speculative extension
    Case("unknown drafter", chat_body(speculative={"drafter": "medusa"}), 400, "speculative.drafter", VALUE),
    Case("draft length too big", chat_body(speculative={"draft_length": 999}), 400, "speculative.draft_length", VALUE),
    Case("speculative unknown field", chat_body(speculative={"tree": 3}), 400, "speculative.tree", "unknown_parameter"),
    Case("speculative a number", chat_body(speculative=3), 400, "speculative", TYPE),
    # OpenAI features outpace does not implement
    Case("logprobs asked", chat_body(logprobs=True), 400, "logprobs", UNSUPPORTED),
    Case("tools given", chat_body(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools", UNSUPPORTED),
    Case("presence penalty", chat_body(presence_penalty=0.5), 400, "presence_penalty", UNSUPPORTED),
    # text completions
    comp("completion empty prompt", completion(prompt=""), 400, "prompt", VALUE),
    comp("completion blank prompt", completion(prompt="   "), 400, "prompt", VALUE),
    comp("completion missing prompt", completion(), 400, "prompt", MISSING),
    comp("completion prompt a number", completion(prompt=5), 400, "prompt", TYPE),
    comp("completion batch of prompts", completion(prompt=["w5", "w6"]), 400, "prompt", VALUE),
    comp("completion empty token list", completion(prompt=[]), 400, "prompt", VALUE),
    comp("completion token outside vocab", completion(prompt=[5, 4000]), 400, "prompt", VALUE),
    comp("completion echo", completion(prompt="w5", echo=True), 400, "echo", UNSUPPORTED),
    comp("completion unknown model", completion(prompt="w5", model="davinci"), 404, "model", "model_not_found"),
    # routes and methods
    Case("unknown route", None, 404, None, "unknown_url", path="/v1/engines", method="GET"),
    Case("unknown post route", {"model": "tiny", "input": "w5"}, 404, None, "unknown_url", path="/v1/embeddings"),
    Case("GET on chat", None, 405, None, "method_not_allowed", method="GET"),
    Case("DELETE on models", None, 405, None, "method_not_allowed", path="/v1/models", method="DELETE"),
    Case("unknown model retrieve", None, 404, "model", "model_not_found", path="/v1/models/gpt-4o", method="GET"),
]


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def send(http: httpx.Client, case: Case) -> httpx.Response:
    if case.body is None:
        return http.request(case.method, case.path, headers=case.headers)
    if isinstance(case.body, bytes):
        headers = {"content-type": "application/json", **case.headers}
        return http.request(case.method, case.path, content=case.body, headers=headers)
    return http.request(case.method, case.path, json=case.body, headers=case.headers)


def test_the_table_is_large_and_its_names_unique() -> None:
    assert len(CASES) >= 20
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request(http: httpx.Client, case: Case) -> None:
    response = send(http, case)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (case.kind, case.param, case.code), error
    assert isinstance(error["message"], str) and error["message"]


def test_the_server_still_serves_after_every_bad_request(server: RunningServer, http: httpx.Client) -> None:  # noqa: F811
    before = server.metrics()
    for case in CASES:
        assert send(http, case).status_code == case.status
    after = server.metrics()
    errors = sum(v for k, v in after.items() if k.startswith("outpace_errors_total"))
    errors -= sum(v for k, v in before.items() if k.startswith("outpace_errors_total"))
    assert errors == len(CASES)
    assert after["outpace_worker_up"] == 1 and after["outpace_active_generations"] == 0
    ok = http.post(CHAT, json=chat_body(max_tokens=6, temperature=0))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 6
    assert http.get("/health").json()["status"] == "ok"


def test_validation_never_answers_422(http: httpx.Client) -> None:
    for body in ({}, {"model": None}, {"messages": None}, {"model": "tiny", "messages": [{}]}):
        response = http.post(CHAT, json=body)
        assert response.status_code == 400 and response.json()["error"]["type"] == INVALID


# ----------------------------------------------------------------------------- failures while generating


@pytest.fixture(scope="module")
def fragile(tiny_dir: Path) -> Iterator[RunningServer]:  # noqa: F811
    """A server whose model fails on any prompt holding the token POISON."""
    with run_server(build_engine(tiny_dir, poison=True)) as running:
        yield running


def test_a_model_failure_is_a_500_and_the_server_goes_on(fragile: RunningServer) -> None:
    poisoned = chat_body(f"w5 w{POISON}", max_tokens=4)
    whole = fragile.http.post(CHAT, json=poisoned)
    assert whole.status_code == 500
    assert whole.json()["error"]["type"] == "server_error" and "simulated" not in whole.text
    with fragile.http.stream("POST", CHAT, json={**poisoned, "stream": True}) as streamed:
        assert streamed.status_code == 200  # the headers went out before the model ran
        events = [line.removeprefix("data: ") for line in streamed.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "server_error"
    assert fragile.http.post(CHAT, json=chat_body(max_tokens=4)).status_code == 200
    metrics = fragile.metrics()
    assert metrics['outpace_generations_total{outcome="failed"}'] == 2
    assert metrics['outpace_errors_total{type="server_error",code="internal_error"}'] == 2
    assert metrics["outpace_worker_up"] == 1


def test_adaptive_needs_a_cost_profile(fragile: RunningServer) -> None:
    response = fragile.http.post(CHAT, json=chat_body(max_tokens=4, speculative={"adaptive": True}))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "speculative.adaptive"
