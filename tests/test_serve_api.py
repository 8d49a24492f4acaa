"""The API through the official `openai` client against the real server and a tiny model:
chat, completions, streaming, seeds, stop strings, usage, the `speculative` extension, and
that what the server sends is exactly what the library generates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from test_serve_harness import EOS, RunningServer, build_engine, server, tiny_dir  # noqa: F401

PROMPT = "w5 w6 w7 w5 w6"


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:  # noqa: F811
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> Any:  # noqa: F811
    """The library itself, without speculation: what the server must reproduce."""
    return build_engine(tiny_dir, drafter="none").decoder


def library_text(decoder: Any, ids: list[int], max_tokens: int, **sampling: Any) -> str:
    from outpace.decoder import GenerationConfig
    from outpace.sampling import SamplingConfig

    return decoder.generate(ids, GenerationConfig(max_tokens, SamplingConfig(**sampling))).text


def chat(client: openai.OpenAI, content: str = PROMPT, **kw: Any) -> Any:
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kw)


def stream_text(stream: Any) -> tuple[str, list[Any]]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# ----------------------------------------------------------------------------- basics


def test_models_and_health(client: openai.OpenAI, server: RunningServer) -> None:  # noqa: F811
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    health = server.http.get("/health").json()
    assert health == {"status": "ok", "model": "tiny", "queue_length": 0, "active_generations": 0}


def test_greedy_chat_is_the_library_output_with_usage_and_statistics(client: openai.OpenAI, reference: Any) -> None:
    resp = chat(client, max_tokens=24, temperature=0)
    ids = reference.encode([{"role": "user", "content": PROMPT}])
    assert resp.choices[0].message.content == library_text(reference, ids, 24)
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "length"
    assert resp.model == "tiny" and resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    usage = resp.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (len(ids), 24, len(ids) + 24)
    spec = resp.model_extra["speculative"]
    assert spec["enabled"] and spec["drafter"] == "prompt-lookup" and spec["draft_length"] == 4
    # Every step commits its accepted drafts plus one token: tau * steps = tokens generated.
    assert spec["tau"] * spec["steps"] == pytest.approx(24, abs=1e-2)
    assert len(spec["acceptance_by_position"]) <= 4
    assert set(spec["time_s"]) == {"prefill", "draft", "verify", "other", "total"}


def test_text_completion_is_the_library_output(client: openai.OpenAI, reference: Any) -> None:
    resp = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0)
    ids = reference.encode(PROMPT, chat=False)
    assert resp.choices[0].text == library_text(reference, ids, 16)
    assert resp.object == "text_completion" and resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == len(ids) and resp.usage.completion_tokens == 16
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=16, temperature=0)
    assert by_ids.choices[0].text == resp.choices[0].text


def test_completion_default_max_tokens_is_sixteen_as_in_openai(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="tiny", prompt=PROMPT, temperature=0)
    assert resp.usage.completion_tokens == 16 and resp.choices[0].finish_reason == "length"


def test_chat_without_max_tokens_fills_the_context(client: openai.OpenAI) -> None:
    resp = chat(client, content="w5 " * 236, temperature=0)  # the default 512 is capped by the window
    assert resp.usage.total_tokens == 256 and resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 256 - 236 - 2


def test_max_completion_tokens_counts(client: openai.OpenAI) -> None:
    resp = chat(client, max_completion_tokens=5, temperature=0)
    assert resp.usage.completion_tokens == 5


# ----------------------------------------------------------------------------- sampling


def test_same_seed_same_text_and_seeds_matter(client: openai.OpenAI) -> None:
    runs = [chat(client, max_tokens=20, temperature=1.0, seed=s).choices[0].message.content for s in (11, 11, 12, 13)]
    assert runs[0] == runs[1]
    assert len(set(runs[1:])) > 1


def test_sampled_chat_is_the_library_output_for_the_seed(client: openai.OpenAI, reference: Any) -> None:
    resp = chat(client, max_tokens=20, temperature=0.9, top_p=0.9, seed=5, extra_body={"speculative": False})
    ids = reference.encode([{"role": "user", "content": PROMPT}])
    expected = library_text(reference, ids, 20, temperature=0.9, top_p=0.9, seed=5)
    assert resp.choices[0].message.content == expected


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_streaming_equals_non_streaming(client: openai.OpenAI, kind: str, temperature: float) -> None:
    kw: dict[str, Any] = {"max_tokens": 30, "temperature": temperature, "seed": 21}
    if kind == "chat":
        resp = chat(client, **kw)
        whole, reason = resp.choices[0].message.content, resp.choices[0].finish_reason
        text, chunks = stream_text(chat(client, stream=True, **kw))
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        resp = client.completions.create(model="tiny", prompt=PROMPT, **kw)
        whole, reason = resp.choices[0].text, resp.choices[0].finish_reason
        chunks = list(client.completions.create(model="tiny", prompt=PROMPT, stream=True, **kw))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole and len(chunks) > 3
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == reason
    assert finals[0].model_extra["speculative"]["steps"] >= 1


def test_stream_usage_chunk(client: openai.OpenAI) -> None:
    with_usage = {"include_usage": True}
    _, chunks = stream_text(chat(client, stream=True, max_tokens=9, temperature=0, stream_options=with_usage))
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_string_cuts_the_text(client: openai.OpenAI) -> None:
    full = chat(client, max_tokens=20, temperature=0).choices[0].message.content
    words = full.split()
    stop = words[6]
    expected = full[: full.index(stop)]
    for stream in (False, True):
        if stream:
            text, chunks = stream_text(chat(client, max_tokens=20, temperature=0, stop=[stop, "never"], stream=True))
            reason = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        else:
            resp = chat(client, max_tokens=20, temperature=0, stop=stop)
            text, reason = resp.choices[0].message.content, resp.choices[0].finish_reason
        assert (text, reason) == (expected, "stop")


def test_system_and_multipart_messages(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "w5 w6 "}, {"type": "text", "text": "w7 w5 w6"}]
    a = client.chat.completions.create(model="tiny", max_tokens=8, temperature=0, messages=[
        {"role": "system", "content": "w9"}, {"role": "user", "content": parts}])
    b = client.chat.completions.create(model="tiny", max_tokens=8, temperature=0, messages=[
        {"role": "developer", "content": "w9"}, {"role": "user", "content": PROMPT}])
    assert a.choices[0].message.content == b.choices[0].message.content


# ----------------------------------------------------------------------------- speculation


def test_speculation_off_gives_the_same_greedy_text(client: openai.OpenAI) -> None:
    on = chat(client, max_tokens=30, temperature=0)
    off = chat(client, max_tokens=30, temperature=0, extra_body={"speculative": False})
    assert on.choices[0].message.content == off.choices[0].message.content
    spec = off.model_extra["speculative"]
    assert (spec["enabled"], spec["drafter"], spec["draft_length"], spec["steps"]) == (False, "none", 0, 30)
    assert spec["tau"] == 1.0


@pytest.mark.parametrize("draft_length", [1, 2, 8])
def test_per_request_draft_length(client: openai.OpenAI, draft_length: int) -> None:
    resp = chat(client, content="w5 w6 w7 w5 w6 w7 w5 w6", max_tokens=30, temperature=0,
                extra_body={"speculative": {"drafter": "default", "draft_length": draft_length}})
    spec = resp.model_extra["speculative"]
    assert spec["draft_length"] == draft_length
    assert len(spec["acceptance_by_position"]) <= draft_length
    assert 1.0 <= spec["tau"] <= draft_length + 1


def test_adaptive_draft_length_keeps_the_output(client: openai.OpenAI) -> None:
    fixed = chat(client, max_tokens=30, temperature=0)
    adaptive = chat(client, max_tokens=30, temperature=0, extra_body={"speculative": {"adaptive": True}})
    assert adaptive.choices[0].message.content == fixed.choices[0].message.content
    assert adaptive.model_extra["speculative"]["adaptive"] is True
    assert fixed.model_extra["speculative"]["adaptive"] is False


def test_unknown_drafter_is_refused_with_the_choices(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, max_tokens=4, extra_body={"speculative": {"drafter": "eagle"}})
    body = err.value.body
    assert body["param"] == "speculative.drafter" and "prompt-lookup" in body["message"]


def test_openai_client_error_classes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        chat(client, n=2)
    assert bad.value.body["param"] == "n"


# ----------------------------------------------------------------------------- metrics


def test_metrics_count_requests_tokens_and_speculation(client: openai.OpenAI, server: RunningServer) -> None:  # noqa: F811
    before = server.metrics()
    resp = chat(client, max_tokens=12, temperature=0)
    with pytest.raises(openai.BadRequestError):
        chat(client, temperature=5)
    after = server.metrics()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('outpace_requests_total{endpoint="/v1/chat/completions",status="200"}') == 1
    assert delta('outpace_requests_total{endpoint="/v1/chat/completions",status="400"}') == 1
    assert delta('outpace_errors_total{type="invalid_request_error",code="invalid_value"}') == 1
    assert delta("outpace_generated_tokens_total") == 12
    assert delta("outpace_prompt_tokens_total") == resp.usage.prompt_tokens
    assert delta('outpace_generations_total{outcome="length"}') == 1
    assert delta("outpace_decode_steps_total") == resp.model_extra["speculative"]["steps"]
    assert after["outpace_mean_accepted_tokens_per_step"] >= 1.0
    assert 0.0 <= after["outpace_acceptance_rate"] <= 1.0
    assert after["outpace_tokens_per_second"] > 0
    assert after["outpace_queue_length"] == 0 and after["outpace_active_generations"] == 0
    text = server.http.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_the_next_chat_turn_reuses_the_cached_prompt(client: openai.OpenAI, reference: Any) -> None:
    first = [{"role": "user", "content": PROMPT}]
    answer = chat(client, max_tokens=12, temperature=0).choices[0].message.content
    turn2 = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "w9 w8"}]
    resp = client.chat.completions.create(model="tiny", messages=turn2, max_tokens=12, temperature=0)
    cached = resp.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < resp.usage.prompt_tokens  # the first turn's prompt at least
    assert cached >= len(reference.encode(first)) - 1
    assert resp.choices[0].message.content == library_text(reference, reference.encode(turn2), 12)
