"""The HTTP client's own layer, on httpx.MockTransport (the real-server tests are in
tests/e2e/test_client.py): the error mapping, what is retried and what is not, SSE streams cut
at odd places, options mapped to the server's field names."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from botframework import (
    APIStatusError,
    AuthenticationError,
    BusyError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from botframework.client import Client, _base


def error(status: int, code: str | None, message: str = "nope", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"message": message, "type": "x", "param": None,
                                                                   "code": code}})


def client_with(handler: Any, **kwargs: Any) -> Client:
    http = httpx.Client(base_url="http://test", transport=httpx.MockTransport(handler))
    client = Client(None, http_client=http, **kwargs)
    client._model = "m"
    return client


@pytest.mark.parametrize(("status", "code", "kind"), [
    (401, "invalid_api_key", AuthenticationError),
    (404, "model_not_found", ModelNotFoundError),
    (503, "server_busy", BusyError),
    (400, "context_length_exceeded", ContextLengthExceededError),
    (400, "invalid_value", InvalidRequestError),
    (413, "body_too_large", InvalidRequestError),
    (500, "internal_error", APIStatusError),
])
def test_each_error_status_is_the_package_exception(status: int, code: str, kind: type[Exception]) -> None:
    exc = _base.api_error(status, {"retry-after": "7"}, {"error": {"message": "m", "code": code}})
    assert type(exc) is kind and exc.__dict__["status_code"] == status
    if kind is BusyError:
        assert exc.retry_after_s == 7  # type: ignore[attr-defined]


def test_context_length_numbers_are_read_back() -> None:
    exc = _base.api_error(400, {}, {"error": {"message": "too long (prompt: 2001 tokens, context: 1024 tokens)",
                                              "code": "context_length_exceeded", "param": "messages"}})
    assert isinstance(exc, ContextLengthExceededError)
    assert (exc.num_prompt_tokens, exc.num_ctx, exc.param) == (2001, 1024, "messages")


def test_busy_is_retried_after_its_retry_after_and_nothing_else_is(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    answers = [error(503, "server_busy", **{"Retry-After": "2"}),
               httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})]
    client = client_with(lambda request: answers.pop(0), max_retries=2)
    assert client.models() == [{"id": "m"}] and slept == [2.0]

    calls: list[int] = []

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return error(500, "internal_error")
    with pytest.raises(APIStatusError):
        client_with(failing, max_retries=5).chat("hi")
    assert len(calls) == 1  # a request that may have started generating is never sent twice

    def read_timeout(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)
    calls.clear()
    with pytest.raises(ServerUnavailableError, match="in time"):
        client_with(read_timeout, max_retries=5).chat("hi")
    assert len(calls) == 1


def test_a_refused_connection_is_retried_then_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls: list[int] = []

    def refused(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)
    with pytest.raises(ServerUnavailableError, match="botframework serve"):
        client_with(refused, max_retries=2).chat("hi")
    assert len(calls) == 3


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        out += b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\n\n"
    return out


def chunk(content: str = "", finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}], **extra}


class Trickle(httpx.SyncByteStream):
    """The body in pieces of `size` bytes: SSE events and UTF-8 characters cut anywhere."""

    def __init__(self, body: bytes, size: int) -> None:
        self.body, self.size = body, size

    def __iter__(self) -> Any:
        for i in range(0, len(self.body), self.size):
            yield self.body[i:i + self.size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_stream_cut_anywhere_reads_the_same(size: int) -> None:
    body = sse(chunk("héllo "), chunk("wörld 🙂"), chunk(finish="stop"),
               {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, b"[DONE]")
    client = client_with(lambda request: httpx.Response(200, stream=Trickle(body, size)))
    stream = client.stream_chat("hi")
    assert "".join(stream) == "héllo wörld 🙂"
    assert (stream.id, stream.finish_reason, stream.usage and stream.usage.completion_tokens) == \
        ("chatcmpl-1", "stop", 2)


def test_an_error_event_mid_stream_raises_its_exception() -> None:
    body = sse(chunk("a"), {"error": {"message": "busy", "code": "server_busy", "type": "server_busy"}})
    stream = client_with(lambda request: httpx.Response(200, content=body)).stream_chat("hi")
    assert next(stream) == "a"
    with pytest.raises(BusyError):
        next(stream)


def test_a_stream_without_its_end_marker_is_a_broken_stream() -> None:
    stream = client_with(lambda request: httpx.Response(200, content=sse(chunk("a")))).stream_chat("hi")
    assert next(stream) == "a"
    with pytest.raises(ServerUnavailableError, match="before its end"):
        next(stream)


def test_options_take_the_servers_names_and_unknown_ones_are_a_type_error() -> None:
    body, structured = _base.chat_body("m", "hi", system="be brief", options={
        "num_keep": 4, "logprobs": 2, "stop": ("a", "b"), "logit_bias": {5: -1.0}, "max_tokens": None})
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert (body["n_keep"], body["logprobs"], body["top_logprobs"], body["stop"], body["logit_bias"]) == \
        (4, True, 2, ["a", "b"], {"5": -1.0})
    assert "max_tokens" not in body and structured is None
    with pytest.raises(TypeError, match="temprature"):
        _base.chat_body("m", "hi", options={"temprature": 0})
    assert _base.chat_body("m", "hi", options={"speculative": True})[0]["speculative"] is True
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    body, structured = _base.chat_body("m", "hi", schema=schema, options={})
    assert body["response_format"]["json_schema"]["schema"] == schema and structured is not None


def test_urls_and_model_specs(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("BOTFRAMEWORK_URL", raising=False)
    assert _base.server_url(None) == "http://127.0.0.1:8000"
    assert _base.server_url("http://h:9/v1/") == "http://h:9"
    monkeypatch.setenv("BOTFRAMEWORK_URL", "localhost:8123")
    assert _base.server_url(None) == "http://localhost:8123"
    monkeypatch.chdir(tmp_path)
    assert _base.model_spec("models/q.gguf") == str(tmp_path / "models" / "q.gguf")
    assert _base.model_spec("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert _base.load_path("/a b/q.gguf") == "/v1/models//a%20b/q.gguf/load"


def test_usage_reads_cached_and_draft_tokens() -> None:
    usage = _base.usage_of({"prompt_tokens": 9, "completion_tokens": 6, "prompt_tokens_details": {"cached_tokens": 4},
                            "completion_tokens_details": {"accepted_prediction_tokens": 5,
                                                          "rejected_prediction_tokens": 2}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (9, 6, 4)
    assert (usage.draft_tokens, usage.accepted_draft_tokens) == (7, 5)  # LocalLLM's fields, the same meaning
    plain = _base.usage_of({"prompt_tokens": 1, "completion_tokens": 1})
    assert (plain.cached_tokens, plain.draft_tokens, plain.accepted_draft_tokens) == (0, 0, 0)
