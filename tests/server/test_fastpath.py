"""FastRoutes (server/fastpath.py) answers exactly as the full app does: for each request of a
corpus (good ones, bad JSON, bad fields, no or a wrong API key, an unknown model, a body over
the limit, another content type), the status and the body are the same whether the short
dispatch takes it or the full FastAPI stack does (CORS configured: FastRoutes steps aside)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.server.fastpath import FastRoutes

KEY = {"authorization": "Bearer k"}
JSON = {"content-type": "application/json"}
CORPUS: list[tuple[str, bytes, dict[str, str]]] = [
    ("a text", json.dumps({"model": "fake-model", "input": "hello"}).encode(), {**JSON, **KEY}),
    ("texts, base64", json.dumps({"model": "fake-model", "input": ["a", "b"], "encoding_format": "base64"}).encode(),
     {**JSON, **KEY}),
    ("token ids", json.dumps({"model": "fake-model", "input": [[1, 2], [3]]}).encode(), {**JSON, **KEY}),
    ("charset", json.dumps({"model": "fake-model", "input": "x"}).encode(),
     {"content-type": "application/json; charset=utf-8", **KEY}),
    ("no key", json.dumps({"model": "fake-model", "input": "hello"}).encode(), JSON),
    ("wrong key", json.dumps({"model": "fake-model", "input": "hello"}).encode(),
     {**JSON, "authorization": "Bearer nope"}),
    ("not JSON", b"{\"model\": ", {**JSON, **KEY}),
    ("empty body", b"", {**JSON, **KEY}),
    ("unknown field", json.dumps({"model": "fake-model", "input": "a", "temperature": 1}).encode(), {**JSON, **KEY}),
    ("bad id", json.dumps({"model": "fake-model", "input": [-1]}).encode(), {**JSON, **KEY}),
    ("empty input", json.dumps({"model": "fake-model", "input": []}).encode(), {**JSON, **KEY}),
    ("unknown model", json.dumps({"model": "nope", "input": "a"}).encode(), {**JSON, **KEY}),
    ("dimensions too big", json.dumps({"model": "fake-model", "input": "a", "dimensions": 99}).encode(),
     {**JSON, **KEY}),
    ("too large", json.dumps({"model": "fake-model", "input": "a" * 5000}).encode(), {**JSON, **KEY}),
    ("text/plain", json.dumps({"model": "fake-model", "input": "a"}).encode(),
     {"content-type": "text/plain", **KEY}),
]


def short_and_full(run: Callable[..., Any], requests: list[tuple[str, bytes, dict[str, str]]],
                   max_body_bytes: int) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """Each (path, body, headers) POSTed to the app twice, on fresh fake runtimes: through the
    short dispatch, then with CORS configured (FastRoutes steps aside: the full FastAPI stack).
    The answers of each, comparable (_comparable)."""
    async def answers(**settings: Any) -> list[tuple[int, Any]]:
        out = []
        async with serve_fake(FakeRuntime(), api_keys=("k",), max_body_bytes=max_body_bytes, **settings) as client:
            for path, content, headers in requests:
                response = await client.post(path, content=content, headers=headers)
                out.append(_comparable(response.status_code, response.headers.get("content-type", ""),
                                       response.text))
        return out

    return run(answers()), run(answers(cors_origins=("http://example.test",)))


def test_the_short_dispatch_answers_as_the_full_app(run: Callable[..., Any]) -> None:
    short, full = short_and_full(run, [("/v1/embeddings", content, headers) for _, content, headers in CORPUS],
                                 max_body_bytes=4096)
    for (name, _, _), a, b in zip(CORPUS, short, full, strict=True):
        assert a == b, name
    statuses = dict(zip([name for name, _, _ in CORPUS], [status for status, _ in short], strict=True))
    assert statuses["a text"] == statuses["token ids"] == statuses["charset"] == 200
    assert statuses["no key"] == statuses["wrong key"] == 401
    assert statuses["not JSON"] == statuses["unknown field"] == statuses["bad id"] == 400
    assert statuses["unknown model"] == 404 and statuses["too large"] == 413


def _comparable(status: int, content_type: str, text: str) -> tuple[int, Any]:
    """A response without what differs between two runs of one request (ids, timestamps)."""
    volatile = {"id", "created", "system_fingerprint"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    if content_type.startswith("text/event-stream"):
        events = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
        return status, [e if e == "[DONE]" else strip(json.loads(e)) for e in events]
    try:
        return status, strip(json.loads(text))
    except ValueError:
        return status, text


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


GENERATION_CORPUS: list[tuple[str, str, dict[str, Any] | bytes, dict[str, str]]] = [
    ("completion", "/v1/completions", {"model": "fake-model", "prompt": "Say hi", "max_tokens": 5}, {**JSON, **KEY}),
    ("completion, streamed", "/v1/completions",
     {"model": "fake-model", "prompt": "Say hi", "max_tokens": 5, "stream": True,
      "stream_options": {"include_usage": True}}, {**JSON, **KEY}),
    ("chat", "/v1/chat/completions",
     {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, {**JSON, **KEY}),
    ("chat, streamed", "/v1/chat/completions",
     {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}, {**JSON, **KEY}),
    ("chat, n=2", "/v1/chat/completions",
     {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 3},
     {**JSON, **KEY}),
    ("chat, no key", "/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
     JSON),
    ("chat, no messages", "/v1/chat/completions", {"model": "fake-model"}, {**JSON, **KEY}),
    ("chat, bad role", "/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "x", "content": "hi"}]},
     {**JSON, **KEY}),
    ("chat, bad temperature", "/v1/chat/completions",
     {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, {**JSON, **KEY}),
    ("chat, unknown model", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
     {**JSON, **KEY}),
    ("chat, not JSON", "/v1/chat/completions", b"{\"messages\": [", {**JSON, **KEY}),
    ("chat, too large", "/v1/chat/completions",
     {"model": "fake-model", "messages": [{"role": "user", "content": "a" * 20000}]}, {**JSON, **KEY}),
    ("completion, prompt too long", "/v1/completions", {"model": "fake-model", "prompt": "a" * 3000},
     {**JSON, **KEY}),
    ("chat, schema 601 levels deep", "/v1/chat/completions",  # past pydantic's JSON parser, not json.loads
     {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": _deep(300)}}},
     {**JSON, **KEY}),
    ("completion, negative max_tokens", "/v1/completions", {"model": "fake-model", "prompt": "a", "max_tokens": -1},
     {**JSON, **KEY}),
]


def test_generation_routes_answer_as_the_full_app(run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """/v1/completions and /v1/chat/completions take the short dispatch too: the same statuses,
    bodies and stream events as through FastAPI, good requests and bad ones alike."""
    handled: list[str] = []
    short_handle = FastRoutes._handle

    async def counted(self: FastRoutes, request: Any, *args: Any) -> Any:
        handled.append(request.url.path)
        return await short_handle(self, request, *args)

    monkeypatch.setattr(FastRoutes, "_handle", counted)
    requests = [(path, body if isinstance(body, bytes) else json.dumps(body).encode(), headers)
                for _, path, body, headers in GENERATION_CORPUS]
    short, full = short_and_full(run, requests, max_body_bytes=16384)
    # every one took the short dispatch the first time, and none the second
    assert handled == [path for _, path, _, _ in GENERATION_CORPUS]
    for (name, *_), a, b in zip(GENERATION_CORPUS, short, full, strict=True):
        assert a == b, name
    statuses = {name: status for (name, *_), (status, _) in zip(GENERATION_CORPUS, short, strict=True)}
    assert statuses["completion"] == statuses["chat"] == statuses["chat, n=2"] == 200
    assert statuses["completion, streamed"] == statuses["chat, streamed"] == 200
    assert statuses["chat, no key"] == 401 and statuses["chat, unknown model"] == 404
    assert statuses["chat, too large"] == 413
    assert statuses["chat, no messages"] == statuses["chat, bad role"] == statuses["chat, bad temperature"] == 400
    assert statuses["chat, not JSON"] == statuses["completion, prompt too long"] == 400
    assert statuses["completion, negative max_tokens"] == 400
    deep = short[[name for name, *_ in GENERATION_CORPUS].index("chat, schema 601 levels deep")]
    assert deep[0] == 400 and "deep" in deep[1]["error"]["message"], deep
    streamed = short[1][1]
    text = "".join(event["choices"][0]["text"] for event in streamed[:-1] if event["choices"])
    assert streamed[-1] == "[DONE]" and text and "Hello from the fake model.".startswith(text)
    assert streamed[-2]["usage"]["completion_tokens"] == 5  # include_usage: the last event before [DONE]
