"""Malformed requests over raw HTTP: each gets its status and an OpenAI-shaped error, and the
server keeps serving afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from test_serve_harness import POISON, RunningServer, build_engine, chat_body, run_server, server, tiny_dir  # noqa: F401

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
BAD_REQUEST, RATE, NOT_FOUND = "invalid_request_error", "rate_limit_error", "invalid_request_error"


def msgs(*messages: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": list(messages), "max_tokens": 4}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "max_tokens": 4, **fields}


# (id, method, path, body: dict -> JSON, bytes -> raw, None -> no body, headers,
#  expected status, expected error type, expected param, expected code)
CASES: list[tuple[str, str, str, Any, dict[str, str], int, str, str | None, str | None]] = [
    ("bad json", "POST", CHAT, b'{"model": "tiny", "messages": [', {}, 400, BAD_REQUEST, None, "invalid_json"),
    ("empty body", "POST", CHAT, b"", {}, 400, BAD_REQUEST, None, "missing_required_parameter"),
    ("body is a list", "POST", CHAT, [1, 2], {}, 400, BAD_REQUEST, None, "invalid_type"),
    ("body is a string", "POST", CHAT, "hello", {}, 400, BAD_REQUEST, None, "invalid_type"),
    ("not json content type", "POST", CHAT, json.dumps(chat_body()).encode(), {"content-type": "text/plain"},
     400, BAD_REQUEST, None, "invalid_type"),
    ("missing model", "POST", CHAT, {"messages": [user("w5")]}, {}, 400, BAD_REQUEST, "model", "missing_required_parameter"),
    ("model not a string", "POST", CHAT, {**chat_body(), "model": 7}, {}, 400, BAD_REQUEST, "model", "invalid_type"),
    ("unknown model", "POST", CHAT, {**chat_body(), "model": "gpt-4o"}, {}, 404, NOT_FOUND, "model", "model_not_found"),
    ("missing messages", "POST", CHAT, {"model": "tiny"}, {}, 400, BAD_REQUEST, "messages", "missing_required_parameter"),
    ("messages not a list", "POST", CHAT, {"model": "tiny", "messages": "w5"}, {}, 400, BAD_REQUEST, "messages", "invalid_type"),
    ("empty messages", "POST", CHAT, msgs(), {}, 400, BAD_REQUEST, "messages", "invalid_value"),
    ("message not an object", "POST", CHAT, msgs("w5"), {}, 400, BAD_REQUEST, "messages[0]", "invalid_type"),
    ("unknown role", "POST", CHAT, msgs({"role": "wizard", "content": "w5"}), {}, 400, BAD_REQUEST, "messages[0].role", "invalid_value"),
    ("missing role", "POST", CHAT, msgs({"content": "w5"}), {}, 400, BAD_REQUEST, "messages[0].role", "missing_required_parameter"),
    ("content a number", "POST", CHAT, msgs(user(5)), {}, 400, BAD_REQUEST, "messages[0].content", "invalid_type"),
    ("image content", "POST", CHAT, msgs(user([{"type": "image_url", "image_url": {"url": "http://x"}}])), {},
     400, BAD_REQUEST, "messages[0].content", "invalid_value"),
    ("only empty contents", "POST", CHAT, msgs(user(""), user("  ")), {}, 400, BAD_REQUEST, "messages", "invalid_value"),
    ("temperature negative", "POST", CHAT, chat_body(temperature=-0.1), {}, 400, BAD_REQUEST, "temperature", "invalid_value"),
    ("temperature above 2", "POST", CHAT, chat_body(temperature=2.5), {}, 400, BAD_REQUEST, "temperature", "invalid_value"),
    ("temperature a string", "POST", CHAT, chat_body(temperature="0.5"), {}, 400, BAD_REQUEST, "temperature", "invalid_type"),
    ("top_p zero", "POST", CHAT, chat_body(top_p=0), {}, 400, BAD_REQUEST, "top_p", "invalid_value"),
    ("top_p above 1", "POST", CHAT, chat_body(top_p=1.5), {}, 400, BAD_REQUEST, "top_p", "invalid_value"),
    ("top_k negative", "POST", CHAT, chat_body(top_k=-1), {}, 400, BAD_REQUEST, "top_k", "invalid_value"),
    ("max_tokens zero", "POST", CHAT, chat_body(max_tokens=0), {}, 400, BAD_REQUEST, "max_tokens", "invalid_value"),
    ("max_tokens negative", "POST", CHAT, chat_body(max_tokens=-3), {}, 400, BAD_REQUEST, "max_tokens", "invalid_value"),
    ("max_tokens a float", "POST", CHAT, chat_body(max_tokens=2.5), {}, 400, BAD_REQUEST, "max_tokens", "invalid_type"),
    ("max_tokens a bool", "POST", CHAT, chat_body(max_tokens=True), {}, 400, BAD_REQUEST, "max_tokens", "invalid_type"),
    ("max_completion_tokens zero", "POST", CHAT, chat_body(max_completion_tokens=0), {}, 400, BAD_REQUEST,
     "max_completion_tokens", "invalid_value"),
    ("n two", "POST", CHAT, chat_body(n=2), {}, 400, BAD_REQUEST, "n", "invalid_value"),
    ("stop a number", "POST", CHAT, chat_body(stop=3), {}, 400, BAD_REQUEST, "stop", "invalid_type"),
    ("five stops", "POST", CHAT, chat_body(stop=list("abcde")), {}, 400, BAD_REQUEST, "stop", "invalid_value"),
    ("seed a string", "POST", CHAT, chat_body(seed="7"), {}, 400, BAD_REQUEST, "seed", "invalid_type"),
    ("seed beyond int64", "POST", CHAT, chat_body(seed=2**70), {}, 400, BAD_REQUEST, "seed", "invalid_value"),
    ("stream a string", "POST", CHAT, chat_body(stream="yes"), {}, 400, BAD_REQUEST, "stream", "invalid_type"),
    ("stream_options wrong", "POST", CHAT, chat_body(stream=True, stream_options={"include_usage": "y"}), {},
     400, BAD_REQUEST, "stream_options.include_usage", "invalid_type"),
    ("prompt too long", "POST", CHAT, chat_body(" ".join(["w5"] * 300)), {}, 400, BAD_REQUEST, "messages", "context_length_exceeded"),
    ("max_tokens too long", "POST", CHAT, chat_body(max_tokens=1000), {}, 400, BAD_REQUEST, "max_tokens", "context_length_exceeded"),
    ("unknown drafter", "POST", CHAT, chat_body(speculative={"drafter": "medusa"}), {}, 400, BAD_REQUEST,
     "speculative.drafter", "invalid_value"),
    ("draft length too big", "POST", CHAT, chat_body(speculative={"draft_length": 999}), {}, 400, BAD_REQUEST,
     "speculative.draft_length", "invalid_value"),
    ("speculative unknown field", "POST", CHAT, chat_body(speculative={"tree": 3}), {}, 400, BAD_REQUEST,
     "speculative.tree", "unknown_parameter"),
    ("speculative a number", "POST", CHAT, chat_body(speculative=3), {}, 400, BAD_REQUEST, "speculative", "invalid_type"),
    ("logprobs asked", "POST", CHAT, chat_body(logprobs=True), {}, 400, BAD_REQUEST, "logprobs", "unsupported_parameter"),
    ("tools given", "POST", CHAT, chat_body(tools=[{"type": "function", "function": {"name": "f"}}]), {}, 400,
     BAD_REQUEST, "tools", "unsupported_parameter"),
    ("presence penalty", "POST", CHAT, chat_body(presence_penalty=0.5), {}, 400, BAD_REQUEST, "presence_penalty",
     "unsupported_parameter"),
    ("completion empty prompt", "POST", COMPLETIONS, completion(prompt=""), {}, 400, BAD_REQUEST, "prompt", "invalid_value"),
    ("completion blank prompt", "POST", COMPLETIONS, completion(prompt="   "), {}, 400, BAD_REQUEST, "prompt", "invalid_value"),
    ("completion missing prompt", "POST", COMPLETIONS, completion(), {}, 400, BAD_REQUEST, "prompt", "missing_required_parameter"),
    ("completion prompt a number", "POST", COMPLETIONS, completion(prompt=5), {}, 400, BAD_REQUEST, "prompt", "invalid_type"),
    ("completion batch of prompts", "POST", COMPLETIONS, completion(prompt=["w5", "w6"]), {}, 400, BAD_REQUEST, "prompt",
     "invalid_value"),
    ("completion empty token list", "POST", COMPLETIONS, completion(prompt=[]), {}, 400, BAD_REQUEST, "prompt", "invalid_value"),
    ("completion token outside vocab", "POST", COMPLETIONS, completion(prompt=[5, 4000]), {}, 400, BAD_REQUEST, "prompt",
     "invalid_value"),
    ("completion echo", "POST", COMPLETIONS, completion(prompt="w5", echo=True), {}, 400, BAD_REQUEST, "echo",
     "unsupported_parameter"),
    ("completion unknown model", "POST", COMPLETIONS, completion(prompt="w5", model="davinci"), {}, 404, NOT_FOUND, "model",
     "model_not_found"),
    ("unknown route", "GET", "/v1/engines", None, {}, 404, NOT_FOUND, None, "unknown_url"),
    ("unknown post route", "POST", "/v1/embeddings", {"model": "tiny", "input": "w5"}, {}, 404, NOT_FOUND, None, "unknown_url"),
    ("GET on chat", "GET", CHAT, None, {}, 405, BAD_REQUEST, None, "method_not_allowed"),
    ("DELETE on models", "DELETE", "/v1/models", None, {}, 405, BAD_REQUEST, None, "method_not_allowed"),
    ("unknown model retrieve", "GET", "/v1/models/gpt-4o", None, {}, 404, NOT_FOUND, "model", "model_not_found"),
]


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def send(http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    if body is None:
        return http.request(method, path, headers=headers)
    if isinstance(body, bytes):
        headers = {"content-type": "application/json", **headers}
        return http.request(method, path, content=body, headers=headers)
    return http.request(method, path, json=body, headers=headers)


def test_the_table_is_large_and_its_names_unique() -> None:
    assert len(CASES) >= 20
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(http: httpx.Client, case: Any) -> None:
    _, method, path, body, headers, status, kind, param, code = case
    response = send(http, method, path, body, headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, param, code), error
    assert isinstance(error["message"], str) and error["message"]


def test_the_server_still_serves_after_every_bad_request(server: RunningServer, http: httpx.Client) -> None:  # noqa: F811
    before = server.metrics()
    for _, method, path, body, headers, status, *_ in CASES:
        assert send(http, method, path, body, headers).status_code == status
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
        assert response.status_code == 400 and response.json()["error"]["type"] == BAD_REQUEST


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
