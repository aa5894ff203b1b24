"""The Anthropic Messages adapter on a fake runtime: shapes, the event sequence, tools, errors.

The official `anthropic` client runs in-process against the app (its httpx2 ASGI transport), so
every object and event we send is one it accepts. No model, no sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.chat.message import MessageDelta, ToolCallDelta
from botframework.chat.tools import ToolChoiceMode
from botframework.engine.stops import StopMatcher
from botframework.errors import BusyError
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage
from botframework.scheduler.sequence import Request
from botframework.server.adapters._anthropic_render import ContentBlocks
from botframework.server.app import create_app
from botframework.server.settings import ServerSettings

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

MESSAGES = "/v1/messages"
REPLY = "Hello from the fake model."
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **extra}


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per server-sent event; the name must match the data's type."""
    out = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"], chunk
        out.append((lines["event"], data))
    return out


def dumped(content: list[Any]) -> list[dict[str, Any]]:
    """Content blocks as plain data (a stream's final message has Parsed* blocks)."""
    return [block.model_dump(exclude={"parsed_output"}, exclude_none=True) for block in content]


def assert_error(resp: httpx.Response, status: int, kind: str) -> str:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}, payload
    assert payload["error"]["type"] == kind and payload["error"]["message"], payload
    return str(payload["error"]["message"])


@asynccontextmanager
async def sdk(runtime: FakeRuntime, **settings: Any) -> AsyncIterator[Any]:
    """The official client, on the app over an in-process transport."""
    app = create_app(ServerSettings(model="fake-model", **settings), runtime_factory=lambda _: runtime)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http, \
                anthropic.AsyncAnthropic(base_url="http://test", api_key="key", http_client=http,
                                         max_retries=0) as client:
            yield client


# --- whole messages ----------------------------------------------------------------------------

def test_a_message_has_anthropics_shape(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(MESSAGES, json=body(), headers={"anthropic-version": "2023-06-01"})
            assert r.status_code == 200, r.text
            message = r.json()
            assert message["id"].startswith("msg_") and message["type"] == "message"
            assert message["role"] == "assistant" and message["model"] == "fake-model"
            assert message["content"] == [{"type": "text", "text": REPLY}]
            assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
            prompt = len(FakeRuntime().render_chat([{"role": "user", "content": "hi"}])[0])
            assert message["usage"] == {"input_tokens": prompt, "output_tokens": len(REPLY),
                                        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            r = await c.post(MESSAGES, json=body(max_tokens=5))
            assert r.json()["stop_reason"] == "max_tokens" and r.json()["content"][0]["text"] == REPLY[:5]
    run(go())


def test_fields_reach_the_one_request_type(run) -> None:
    runtime = FakeRuntime()

    async def go() -> None:
        async with serve_fake(runtime) as c:
            r = await c.post(MESSAGES, json=body(
                system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                temperature=0.5, top_p=0.9, top_k=7, stop_sequences=["END"], metadata={"user_id": "u1"},
                session_id="s1", service_tier="auto", thinking={"type": "disabled"}))
            assert r.status_code == 200, r.text
    run(go())
    request = runtime.requests[-1]
    sampler = request.params.sampler
    assert (sampler.temperature, sampler.top_p, sampler.top_k) == (0.5, 0.9, 7)
    assert "END" in request.params.stop and request.session_id == "s1" and request.params.max_tokens == 64
    messages, _ = runtime.chat_plans[-1]
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_output_config_format_is_our_structured_output(run) -> None:
    runtime = FakeRuntime(json_reply='{"name": "Ada"}')
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}

    async def go() -> None:
        async with serve_fake(runtime) as c:
            r = await c.post(MESSAGES, json=body(output_config={"format": {"type": "json_schema", "schema": schema},
                                                                "effort": "low"}))
            assert r.status_code == 200, r.text
            assert json.loads(r.json()["content"][0]["text"]) == {"name": "Ada"}
            r = await c.post(MESSAGES, json=body(output_config={"format": {"type": "json_schema", "schema": schema}},
                                                 tools=[WEATHER]))
            assert_error(r, 400, "invalid_request_error")  # one constraint per request, as on chat completions
    run(go())
    assert runtime.chat_plans[0][1].structured.schema == schema


def test_count_tokens_counts_the_rendered_prompt(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(f"{MESSAGES}/count_tokens", json={
                "model": "fake-model", "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            expected = FakeRuntime().render_chat([{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "hi"}])[0]
            assert r.json() == {"input_tokens": len(expected)}
            # too long for the context: still counted
            r = await c.post(f"{MESSAGES}/count_tokens", json={
                "model": "fake-model", "messages": [{"role": "user", "content": "x" * 2000}]})
            assert r.status_code == 200 and r.json()["input_tokens"] > 2000
    run(go())


# --- streams -----------------------------------------------------------------------------------

def test_the_stream_follows_anthropics_event_sequence(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            whole = (await c.post(MESSAGES, json=body())).json()
            r = await c.post(MESSAGES, json=body(stream=True))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            seq = events(r.text)
            names = [name for name, _ in seq]
            assert names[:3] == ["message_start", "content_block_start", "ping"]
            assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
            assert set(names[3:-3]) == {"content_block_delta"}
            start = seq[0][1]["message"]
            assert start["content"] == [] and start["stop_reason"] is None and start["id"].startswith("msg_")
            assert seq[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            text = "".join(data["delta"]["text"] for name, data in seq if name == "content_block_delta")
            assert text == whole["content"][0]["text"]
            final = seq[-2][1]
            assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
            assert final["usage"] == whole["usage"]
    run(go())


def test_the_official_client_reads_the_stream_as_the_whole_message(run) -> None:
    async def go() -> None:
        async with sdk(FakeRuntime()) as client:
            created = await client.messages.create(model="fake-model", max_tokens=64,
                                                   messages=[{"role": "user", "content": "hi"}])
            async with client.messages.stream(model="fake-model", max_tokens=64,
                                              messages=[{"role": "user", "content": "hi"}]) as stream:
                text = "".join([piece async for piece in stream.text_stream])
                final = await stream.get_final_message()
            assert text == REPLY == created.content[0].text
            assert dumped(final.content) == dumped(created.content) and final.stop_reason == created.stop_reason == "end_turn"
            assert final.usage.output_tokens == created.usage.output_tokens
            counted = await client.messages.count_tokens(model="fake-model",
                                                         messages=[{"role": "user", "content": "hi"}])
            assert counted.input_tokens == created.usage.input_tokens
    run(go())


class StoppingRuntime(FakeRuntime):
    """Stop strings as the engine matches them: the stop's text is not sent, its tokens were sampled."""

    async def _produce(self, request: Request, handle: RequestHandle) -> None:
        matcher = StopMatcher(request.params.stop)
        rid = request.request_id
        for n, ch in enumerate(self.reply):
            await asyncio.sleep(0)
            text = matcher.feed(ch)
            token = self.tokenize(ch, add_special=False)[0]
            last = matcher.stopped or n == len(self.reply) - 1
            handle.publish(Delta(rid, text=text + ("" if matcher.stopped or not last else matcher.flush()),
                                 token_ids=(token,), finish_reason=FinishReason.STOP if last else None,
                                 usage=Usage(len(request.prompt_tokens), n + 1) if last else None))
            if last:
                break
        self.active.pop(rid, None)
        self.handles.pop(rid, None)


def test_a_stop_sequence_is_named_in_stop_reason(run) -> None:
    async def go() -> None:
        async with sdk(StoppingRuntime(reply="One, two, three. Four.")) as client:
            kwargs: dict[str, Any] = {"model": "fake-model", "max_tokens": 64, "stop_sequences": ["zzz", "three"],
                                      "messages": [{"role": "user", "content": "count"}]}
            created = await client.messages.create(**kwargs)
            assert created.stop_reason == "stop_sequence" and created.stop_sequence == "three"
            assert created.content[0].text == "One, two, "
            async with client.messages.stream(**kwargs) as stream:
                final = await stream.get_final_message()
            assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "three")
            assert dumped(final.content) == dumped(created.content)
            # ended by the model, not a stop: end_turn
            plain = await client.messages.create(**{**kwargs, "stop_sequences": ["zzz"]})
            assert plain.stop_reason == "end_turn" and plain.stop_sequence is None
    run(go())


def test_an_engine_failure_mid_stream_is_an_error_event(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(error_after=3)) as c:
            r = await c.post(MESSAGES, json=body(stream=True))
            assert r.status_code == 200
            seq = events(r.text)
            assert seq[0][0] == "message_start" and seq[-1][0] == "error"
            assert seq[-1][1]["error"]["type"] == "api_error" and seq[-1][1]["error"]["message"]
            assert "message_stop" not in [name for name, _ in seq]
        async with sdk(FakeRuntime(error_after=3)) as client:
            with pytest.raises(anthropic.APIStatusError):
                async with client.messages.stream(model="fake-model", max_tokens=64,
                                                  messages=[{"role": "user", "content": "hi"}]) as stream:
                    async for _ in stream:
                        pass
    run(go())


def test_a_client_that_disconnects_mid_stream_cancels_the_request(run) -> None:
    runtime = FakeRuntime(token_delay_s=0.02)
    app = create_app(ServerSettings(model="fake-model"), runtime_factory=lambda _: runtime)
    payload = json.dumps(body(stream=True)).encode()
    received: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not received:
            received.append({})
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"content_block_delta" in message.get("body", b""):
            gone.set()  # the client reads one text delta, then goes away

    async def go() -> None:
        async with app.router.lifespan_context(app):
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": MESSAGES, "raw_path": MESSAGES.encode(), "query_string": b"",
                     "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
                     "server": ("test", 80), "root_path": "", "app": app}
            await asyncio.wait_for(app(scope, receive, send), 10)
            for _ in range(100):
                if not runtime.active:
                    break
                await asyncio.sleep(0.01)
    run(go())
    assert runtime.cancelled == [runtime.requests[-1].request_id] and not runtime.active
    assert runtime.num_generated < len(REPLY)


# --- tools -------------------------------------------------------------------------------------

def test_a_forced_tool_call_is_a_tool_use_block_whole_and_streamed(run) -> None:
    runtime = FakeRuntime(reply=CALL)

    async def go() -> None:
        async with sdk(runtime) as client:
            kwargs: dict[str, Any] = {"model": "fake-model", "max_tokens": 200, "tools": [WEATHER],
                                      "tool_choice": {"type": "tool", "name": "get_weather"},
                                      "messages": [{"role": "user", "content": "Weather in Paris?"}]}
            created = await client.messages.create(**kwargs)
            assert created.stop_reason == "tool_use"
            (call,) = created.content
            assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
            async with client.messages.stream(**kwargs) as stream:
                names = [e.type async for e in stream]
                final = await stream.get_final_message()
            assert final.stop_reason == "tool_use" and len(final.content) == 1
            assert (final.content[0].name, final.content[0].input) == ("get_weather", {"city": "Paris"})
            assert "content_block_start" in names and names[-1] == "message_stop"
    run(go())
    _, options = runtime.chat_plans[-1]
    assert options.tool_choice.mode is ToolChoiceMode.NAMED and options.tool_choice.name == "get_weather"
    assert options.parallel_tool_calls and options.tools[0].parameters == WEATHER["input_schema"]


def test_tool_choice_maps_onto_ours(run) -> None:
    runtime = FakeRuntime()
    choices = [({"type": "auto"}, ToolChoiceMode.AUTO, True), ({"type": "any"}, ToolChoiceMode.REQUIRED, True),
               ({"type": "none"}, ToolChoiceMode.NONE, True),
               ({"type": "any", "disable_parallel_tool_use": True}, ToolChoiceMode.REQUIRED, False),
               (None, ToolChoiceMode.AUTO, True)]

    async def go() -> None:
        async with serve_fake(runtime) as c:
            for choice, _, _ in choices:
                extra = {"tool_choice": choice} if choice is not None else {}
                r = await c.post(MESSAGES, json=body(tools=[WEATHER], **extra))
                assert r.status_code == 200, r.text
    run(go())
    got = [(options.tool_choice.mode, options.parallel_tool_calls) for _, options in runtime.chat_plans]
    assert got == [(mode, parallel) for _, mode, parallel in choices]


def test_tool_use_and_tool_result_turns_become_tool_calls_and_tool_messages(run) -> None:
    runtime = FakeRuntime()
    conversation = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ]

    async def go() -> None:
        async with serve_fake(runtime) as c:
            r = await c.post(MESSAGES, json=body(tools=[WEATHER], messages=conversation))
            assert r.status_code == 200, r.text
            r = await c.post(MESSAGES, json=body(messages=[conversation[0], conversation[1], {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "timeout", "is_error": True}]}]))
            assert r.status_code == 200, r.text
    run(go())
    messages, _ = runtime.chat_plans[0]
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "reasoning_content": "Use the tool.",
         "tool_calls": [{"id": "toolu_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "name": "get_weather", "content": "sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert runtime.chat_plans[1][0][-1]["content"] == "Error: timeout"


def test_content_blocks_stream_in_order_with_their_indices() -> None:
    blocks = ContentBlocks()
    out = blocks.feed([MessageDelta(reasoning_content="hmm"), MessageDelta(content="Hi"),
                       MessageDelta(tool_call=ToolCallDelta(0, id="call_1", name="f")),
                       MessageDelta(tool_call=ToolCallDelta(0, arguments='{"a"')),
                       MessageDelta(tool_call=ToolCallDelta(0, arguments=": 1}"))]) + blocks.close()
    seq = events(out.decode())
    assert [(name, data.get("index")) for name, data in seq] == [
        ("content_block_start", 0), ("ping", None), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_delta", 2),
        ("content_block_stop", 2)]
    assert seq[0][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert seq[2][1]["delta"] == {"type": "thinking_delta", "thinking": "hmm"}
    assert seq[5][1]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert seq[7][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert [seq[i][1]["delta"]["partial_json"] for i in (8, 9)] == ['{"a"', ": 1}"]
    assert events(ContentBlocks().close().decode()) == [("ping", {"type": "ping"})]  # an empty answer


# --- errors ------------------------------------------------------------------------------------

BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "model"),
    ({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "system", "content": "x"}]), "role"),
    (body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "text"),
    (body(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x",
                                                                            "media_type": "image/png"}}]}]), "image"),
    (body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]), "document"),
    (body(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                  "content": [{"type": "image", "source": {}}]}]}]), "image"),
    (body(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}]),
     "assistant turn"),
    (body(temperature=1.5), "temperature"),
    (body(top_k=-1), "top_k"),
    (body(stop_sequences=[""]), "stop_sequences"),
    (body(stop_sequences="END"), "stop_sequences"),
    (body(unknown_field=1), "unknown_field"),
    (body(container="c1"), "container"),
    (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "web_search"),
    (body(tools=[{"name": "bad name!", "input_schema": {"type": "object"}}]), "name"),
    (body(tools=[WEATHER, WEATHER]), "twice"),
    (body(tools=[{"name": "f", "input_schema": {"type": "string", "format": "uri"}}]), "format"),
    (body(tool_choice={"type": "tool", "name": "nope"}, tools=[WEATHER]), "nope"),
    (body(tool_choice={"type": "any"}), "tool"),
    (body(tool_choice={"type": "sometimes"}), "tool_choice"),
    (body(output_config={"format": {"type": "json_schema", "schema": {"type": "number", "multipleOf": 2}}}),
     "multipleOf"),
    (body(max_tokens=10**9), "max_tokens"),
    (body(messages=[{"role": "user", "content": "x" * 2000}]), "context"),
    ([1, 2], ""),
    ("hello", ""),
]


@pytest.mark.parametrize(("payload", "mentions"), BAD_BODIES)
def test_bad_bodies_are_400_invalid_request_errors(run, payload: Any, mentions: str) -> None:
    async def go() -> None:
        async with serve_fake(max_tokens_cap=4096) as c:
            message = assert_error(await c.post(MESSAGES, json=payload), 400, "invalid_request_error")
            assert mentions in message, message
    run(go())


def test_malformed_json_and_wrong_content_type_are_400s(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            for raw in (b"{not json", b"", b"null", b"\x80"):
                r = await c.post(MESSAGES, content=raw, headers={"content-type": "application/json"})
                assert_error(r, 400, "invalid_request_error")
            r = await c.post(f"{MESSAGES}/count_tokens", content=b"{", headers={"content-type": "application/json"})
            assert_error(r, 400, "invalid_request_error")
    run(go())


def test_other_methods_and_oversized_bodies_answer_in_anthropics_shape(run) -> None:
    async def go() -> None:
        async with serve_fake(max_body_bytes=1000) as c:
            for method in ("GET", "PUT", "DELETE"):
                r = await c.request(method, MESSAGES)
                assert_error(r, 405, "invalid_request_error")
                assert r.headers["allow"] == "POST"
            r = await c.post(MESSAGES, json=body(messages=[{"role": "user", "content": "x" * 2000}]))
            assert_error(r, 413, "request_too_large")
            r = await c.post("/v1/chat/completions", json={"model": "fake-model", "messages": [
                {"role": "user", "content": "x" * 2000}]})
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"  # OpenAI's, elsewhere
        async with sdk(FakeRuntime(), max_body_bytes=1000) as client:
            with pytest.raises(anthropic.ContentTooLargeError):
                await client.messages.create(model="fake-model", max_tokens=5,
                                             messages=[{"role": "user", "content": "x" * 2000}])
    run(go())


def test_unknown_model_is_404_not_found_error(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            assert_error(await c.post(MESSAGES, json=body(model="nope")), 404, "not_found_error")
            r = await c.post(f"{MESSAGES}/count_tokens", json={"model": "nope", "messages": [{"role": "user",
                                                                                            "content": "hi"}]})
            assert_error(r, 404, "not_found_error")
        async with sdk(FakeRuntime()) as client:
            with pytest.raises(anthropic.NotFoundError):
                await client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    run(go())


def test_the_api_key_is_accepted_as_x_api_key(run) -> None:
    async def go() -> None:
        async with serve_fake(api_keys=("key",)) as c:
            for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
                message = assert_error(await c.post(MESSAGES, json=body(), headers=headers), 401,
                                       "authentication_error")
                assert "x-api-key" in message
            assert_error(await c.post(f"{MESSAGES}/count_tokens", json=body()), 401, "authentication_error")
            for headers in ({"x-api-key": "key"}, {"authorization": "Bearer key"}):
                r = await c.post(MESSAGES, json=body(), headers={**headers, "anthropic-version": "2023-06-01"})
                assert r.status_code == 200, r.text
        async with sdk(FakeRuntime(), api_keys=("other",)) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await client.messages.create(model="fake-model", max_tokens=5,
                                             messages=[{"role": "user", "content": "hi"}])
    run(go())


def test_a_full_queue_is_529_overloaded_with_retry_after(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(submit_error=BusyError("busy", retry_after_s=2))) as c:
            for stream in (False, True):
                r = await c.post(MESSAGES, json=body(stream=stream))
                assert_error(r, 529, "overloaded_error")
                assert r.headers["retry-after"] == "2"
        async with sdk(FakeRuntime(submit_error=BusyError("busy", retry_after_s=1))) as client:
            with pytest.raises(anthropic.OverloadedError):
                await client.messages.create(model="fake-model", max_tokens=5,
                                             messages=[{"role": "user", "content": "hi"}])
    run(go())


def test_a_model_that_cannot_start_is_a_5xx_in_anthropics_shape(run) -> None:
    async def go() -> None:
        from botframework.errors import ModelLoadError

        async with serve_fake(fail=ModelLoadError("broken file")) as c:
            assert_error(await c.post(MESSAGES, json=body()), 503, "api_error")
    run(go())


def test_the_routes_are_in_the_openapi_document(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            paths = (await c.get("/openapi.json")).json()["paths"]
            assert "requestBody" in paths[MESSAGES]["post"]
            assert "requestBody" in paths[f"{MESSAGES}/count_tokens"]["post"]
    run(go())
