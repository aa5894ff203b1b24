"""The OpenAI Responses adapter (/v1/responses) on the fake runtime: event sequence and
sequence numbers, shapes checked against the official client's own types, the official
client's stream and parse helpers over ASGI, conversations via previous_response_id on one
session, errors for bad bodies (4xx, never 5xx), store eviction, delete and cancel. No model.

The fake answers structured requests with `json_reply` and everything else with `reply`, one
character per token.
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

from botframework.errors import DecodeError
from botframework.scheduler.sequence import Priority
from botframework.server.adapters import _responses_store

openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")
from openai.types.responses import Response, ResponseStreamEvent  # noqa: E402
from pydantic import BaseModel, TypeAdapter  # noqa: E402

URL = "/v1/responses"
REPLY = "Hello from the fake model."
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
EVENTS = TypeAdapter(ResponseStreamEvent)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "input": "hi", **extra}


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


def events(resp: httpx.Response) -> list[dict[str, Any]]:
    """The stream's events, each checked: its `event:` line names its type, the official
    client's types accept it."""
    out = []
    for block in resp.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        EVENTS.validate_python(payload)
        out.append(payload)
    return out


def checked(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    Response.model_validate(resp.json())  # the official client's type of a Response
    return resp.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def sdk(client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """The official async client on the same app (its own httpx2 transport over ASGI)."""
    app = client._transport.app  # type: ignore[attr-defined]
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test/v1") as http:
        yield openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)


def test_a_text_response_has_openai_s_shape(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = checked(await c.post(URL, json=body(instructions="Be brief.", max_output_tokens=100,
                                                     metadata={"k": "v"})))
            assert r["object"] == "response" and r["status"] == "completed" and r["id"].startswith("resp_")
            assert r["instructions"] == "Be brief." and r["metadata"] == {"k": "v"} and r["store"] is True
            [item] = r["output"]
            assert item["type"] == "message" and item["role"] == "assistant" and item["id"].startswith("msg_")
            assert item["content"] == [{"type": "output_text", "text": REPLY, "annotations": [], "logprobs": []}]
            usage = r["usage"]
            assert usage["output_tokens"] == len(REPLY) and usage["input_tokens"] > 0
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
            assert usage["input_tokens_details"]["cached_tokens"] == 0
            # max_output_tokens cuts it: incomplete, and says why
            r = checked(await c.post(URL, json=body(max_output_tokens=5)))
            assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
            assert r["output"][0]["content"][0]["text"] == REPLY[:5] and r["output"][0]["status"] == "incomplete"
    run(go())


def test_input_items_become_the_chat_the_core_renders(run) -> None:
    async def go() -> None:
        rt = FakeRuntime()
        async with serve_fake(rt) as c:
            items = [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                                                 {"type": "input_text", "text": "in Paris?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text",
                                                                                 "text": "Call it."}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}',
                 "id": "fc_1", "status": "completed"},
                {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "It is 21.", "annotations": []}]},
                {"role": "user", "content": "Thanks"},
            ]
            checked(await c.post(URL, json=body(input=items, tools=[WEATHER], instructions="Be kind.")))
            messages, options = rt.chat_plans[-1]
            assert messages == [
                {"role": "system", "content": "Be kind."},
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "reasoning_content": "Call it.", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                {"role": "assistant", "content": "It is 21."},
                {"role": "user", "content": "Thanks"}]
            assert [t.name for t in options.tools] == ["get_weather"] and options.parallel_tool_calls
    run(go())


def test_stream_events_come_in_order_with_sequence_numbers(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(URL, json=body(stream=True))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            evs = events(r)
            assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
            kinds = [e["type"] for e in evs]
            deltas = kinds.count("response.output_text.delta")
            assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                             "response.content_part.added", *["response.output_text.delta"] * deltas,
                             "response.output_text.done", "response.content_part.done",
                             "response.output_item.done", "response.completed"]
            assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
            text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
            final = evs[-1]["response"]
            item = final["output"][0]
            assert text == REPLY == evs[-4]["text"] == item["content"][0]["text"]
            assert {e.get("item_id", e.get("item", {}).get("id")) for e in evs[2:-1]} == {item["id"]}
            assert evs[-2]["item"] == item and final["status"] == "completed" and final["usage"]["output_tokens"] == 26
            # the same as the whole answer (ids aside)
            whole = checked(await c.post(URL, json=body()))
            assert whole["output"][0]["content"] == item["content"] and whole["usage"] == final["usage"]
            # cut by max_output_tokens: response.incomplete
            evs = events(await c.post(URL, json=body(stream=True, max_output_tokens=3)))
            assert evs[-1]["type"] == "response.incomplete"
            assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    run(go())


def test_tool_calls_whole_and_streamed_as_function_call_items(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(reply=CALL)) as c:
            whole = checked(await c.post(URL, json=body(tools=[WEATHER], tool_choice="required")))
            [call] = whole["output"]
            assert call["type"] == "function_call" and call["name"] == "get_weather" and call["id"].startswith("fc_")
            assert call["call_id"].startswith("call_") and json.loads(call["arguments"]) == {"city": "Paris"}
            assert whole["tools"] == [WEATHER] and whole["tool_choice"] == "required"
            evs = events(await c.post(URL, json=body(tools=[WEATHER], stream=True)))
            kinds = [e["type"] for e in evs]
            assert kinds[2] == "response.output_item.added" and evs[2]["item"]["type"] == "function_call"
            assert evs[2]["item"]["arguments"] == "" and evs[2]["item"]["name"] == "get_weather"
            assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                                  "response.completed"]
            arguments = "".join(e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta")
            streamed = evs[-1]["response"]["output"][0]
            assert arguments == streamed["arguments"] == call["arguments"] == evs[-3]["arguments"]
            assert streamed["call_id"] == evs[2]["item"]["call_id"]
            # a named function, and allowed_tools narrowing the choice
            for choice in ({"type": "function", "name": "get_weather"},
                           {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                                                    "name": "get_weather"}]}):
                r = checked(await c.post(URL, json=body(tools=[WEATHER, {**WEATHER, "name": "other"}],
                                                         tool_choice=choice)))
                assert r["output"][0]["name"] == "get_weather"
    run(go())


def test_the_official_client_reads_the_stream_parse_and_tool_calls(run) -> None:
    class N(BaseModel):
        n: int

    async def go() -> None:
        async with serve_fake(FakeRuntime(json_reply='{"n": 3}')) as c, sdk(c) as client:
            async with client.responses.stream(model="fake-model", input="hi") as stream:
                deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
                final = await stream.get_final_response()
            assert "".join(deltas) == final.output_text == REPLY
            parsed = await client.responses.parse(model="fake-model", input="a number", text_format=N)
            assert parsed.output_parsed == N(n=3)
            created = await client.responses.create(model="fake-model", input="hi", store=False)
            assert created.output_text == REPLY and created.store is False
        async with serve_fake(FakeRuntime(reply=CALL)) as c, sdk(c) as client:
            async with client.responses.stream(model="fake-model", input="hi", tools=[WEATHER]) as stream:
                argument_deltas = [e async for e in stream if e.type == "response.function_call_arguments.delta"]
                final = await stream.get_final_response()
            assert argument_deltas[-1].snapshot == final.output[0].arguments
    run(go())


def test_structured_output_is_enforced_and_validated(run) -> None:
    async def go() -> None:
        fmt = {"type": "json_schema", "name": "n", "schema": SCHEMA, "strict": True}
        async with serve_fake(FakeRuntime(json_reply='{"n": 3}')) as c:
            r = checked(await c.post(URL, json=body(text={"format": fmt})))
            assert json.loads(r["output"][0]["content"][0]["text"]) == {"n": 3} and r["text"]["format"] == fmt
            r = checked(await c.post(URL, json=body(text={"format": {"type": "json_object"}})))
            assert r["output"][0]["content"][0]["text"] == '{"n": 3}'
        async with serve_fake(FakeRuntime(json_reply='{"n": "x"}')) as c:
            err = error_of(await c.post(URL, json=body(text={"format": fmt})), 500)
            assert err["code"] == "output_validation_failed"
            evs = events(await c.post(URL, json=body(text={"format": fmt}, stream=True)))
            assert [e["type"] for e in evs[-2:]] == ["error", "response.failed"]
            assert evs[-1]["response"]["status"] == "failed" and evs[-1]["response"]["error"]["code"] == "server_error"
    run(go())


def test_an_engine_failure_mid_stream_is_an_error_then_response_failed(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(error_after=4)) as c:
            evs = events(await c.post(URL, json=body(stream=True)))
            assert [e["type"] for e in evs[-2:]] == ["error", "response.failed"]
            assert evs[-2]["code"] == "engine_error" and evs[-1]["response"]["output"][0]["status"] == "incomplete"
            err = error_of(await c.post(URL, json=body()), 500)
            assert err["code"] == "engine_error"
        async with serve_fake(FakeRuntime(submit_error=DecodeError("boom", op="llama_decode", code=-1))) as c:
            error_of(await c.post(URL, json=body(stream=True)), 500)  # before the stream began: a status
    run(go())


def test_previous_response_id_continues_the_conversation_on_one_session(run) -> None:
    async def go() -> None:
        rt = FakeRuntime()
        async with serve_fake(rt) as c:
            first = checked(await c.post(URL, json=body(input="one", instructions="First rules.")))
            second = checked(await c.post(URL, json=body(input="two", previous_response_id=first["id"], stream=False)))
            third = events(await c.post(URL, json=body(input="three", previous_response_id=second["id"],
                                                       instructions="New rules.", stream=True)))[-1]["response"]
            assert third["previous_response_id"] == second["id"] and third["status"] == "completed"
            messages, _ = rt.chat_plans[-1]
            # instructions are not carried over; every earlier input and output is
            assert messages == [{"role": "system", "content": "New rules."},
                                {"role": "user", "content": "one"}, {"role": "assistant", "content": REPLY},
                                {"role": "user", "content": "two"}, {"role": "assistant", "content": REPLY},
                                {"role": "user", "content": "three"}]
            sessions = {r.session_id for r in rt.requests}
            assert len(sessions) == 1 and None not in sessions  # one chain, one KV state
            # store=false: nothing kept, no session; cannot be continued or retrieved
            lone = checked(await c.post(URL, json=body(store=False)))
            assert rt.requests[-1].session_id is None and lone["store"] is False
            error_of(await c.get(f"{URL}/{lone['id']}"), 404)
            err = error_of(await c.post(URL, json=body(previous_response_id=lone["id"])), 400)
            assert err["param"] == "previous_response_id" and err["code"] == "previous_response_not_found"
            # a store=false turn may still continue a stored one, on its session
            checked(await c.post(URL, json=body(previous_response_id=first["id"], store=False)))
            assert rt.requests[-1].session_id in sessions
            assert checked(await c.get(f"{URL}/{third['id']}")) == third
    run(go())


def test_bad_bodies_are_4xx_naming_the_field(run) -> None:
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"model": "fake-model"}, "input"),
        (body(input=[]), "input"),
        (body(tools=[{"type": "web_search"}]), "tools[0].type"),
        (body(tools=[{"type": "function", "name": "bad name!"}]), "tools"),
        (body(tool_choice={"type": "web_search"}), "tool_choice"),
        (body(tool_choice={"type": "function", "name": "nope"}, tools=[WEATHER]), "tool_choice"),
        (body(tool_choice="required"), "tool_choice"),
        (body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]),
         "input[0].content[0].type"),
        (body(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0].type"),
        (body(input=[{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file"}]}]),
         "input[0].output[0].type"),
        (body(input=[{"role": "robot", "content": "x"}]), None),
        (body(background=True), "background"),
        (body(conversation="conv_1"), "conversation"),
        (body(prompt={"id": "pmpt_1"}), "prompt"),
        (body(max_tool_calls=3), "max_tool_calls"),
        (body(reasoning={"effort": "high"}), "reasoning.effort"),
        (body(text={"format": {"type": "json_schema", "name": "x"}}), "text.format.schema"),
        (body(text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}}), "text.format"),
        (body(text={"format": {"type": "json_object"}}, tools=[WEATHER]), "text.format"),
        (body(text={"verbosity": "low"}), "text.verbosity"),
        (body(include=["message.output_text.logprobs"]), "include"),
        (body(temperature=3), "temperature"),
        (body(max_output_tokens=0), "max_output_tokens"),
        (body(max_output_tokens=10**9), "max_output_tokens"),
        (body(stream_options={"include_obfuscation": False}), "stream_options"),
        (body(previous_response_id="resp_nope"), "previous_response_id"),
        (body(frequency_penalty=1), "frequency_penalty"),
        (body(truncation="sometimes"), "truncation"),
    ]

    async def go() -> None:
        rt = FakeRuntime()
        async with serve_fake(rt) as c:
            for case, param in cases:
                err = error_of(await c.post(URL, json=case), 400)
                assert param is None or err["param"] == param, (case, err)
            err = error_of(await c.post(URL, json=body(model="gpt-5")), 404)
            assert err["code"] == "model_not_found" and err["param"] == "model"
            for raw in (b"{", b"[]", b'"x"', b"null"):
                error_of(await c.post(URL, content=raw, headers={"content-type": "application/json"}), 400)
            # accepted and echoed: fields that change nothing here
            r = checked(await c.post(URL, json=body(include=["reasoning.encrypted_content"], user="u",
                                                    prompt_cache_key="k", safety_identifier="s",
                                                    reasoning={"effort": "none"}, truncation="auto",
                                                    stream_options=None, text={"verbosity": "medium"})))
            assert r["truncation"] == "auto" and r["reasoning"]["effort"] == "none"
            assert rt.chat_plans[-1][1].enable_thinking is False  # effort "none": a reasoning template would not think
    run(go())


def test_store_evicts_the_least_recently_used_and_frees_their_sessions(run, monkeypatch) -> None:
    monkeypatch.setattr(_responses_store, "MAX_STORED_RESPONSES", 2)  # read when the app's store is made

    async def go() -> None:
        rt = FakeRuntime()
        async with serve_fake(rt) as c:
            a = checked(await c.post(URL, json=body(input="a")))
            a2 = checked(await c.post(URL, json=body(input="a2", previous_response_id=a["id"])))
            session_a = rt.requests[-1].session_id
            b = checked(await c.post(URL, json=body(input="b")))  # evicts a (least recently used)
            await asyncio.sleep(0.05)  # evicted sessions are dropped in the background
            error_of(await c.get(f"{URL}/{a['id']}"), 404)
            assert session_a in rt.seen_sessions  # a2 still holds the chain's session
            checked(await c.get(f"{URL}/{a2['id']}"))  # now the most recently used: b goes next
            checked(await c.post(URL, json=body(input="c")))
            await asyncio.sleep(0.05)
            error_of(await c.get(f"{URL}/{b['id']}"), 404)
            checked(await c.post(URL, json=body(input="d")))  # evicts a2: its chain's session goes too
            await asyncio.sleep(0.05)
            error_of(await c.get(f"{URL}/{a2['id']}"), 404)
            assert session_a not in rt.seen_sessions
            store = c._transport.app.state.responses_store  # type: ignore[attr-defined]
            assert len(store) == 2 and store.num_evicted == 3
    run(go())


def test_store_is_bounded_by_bytes_too() -> None:
    store = _responses_store.ResponseStore(max_responses=100, max_bytes=2000)
    big = {"text": "x" * 900}
    for i in range(5):
        store.put(f"r{i}", _responses_store.Stored(big, [], f"s{i}"))
    assert len(store) == 2 and store.num_bytes <= 2000 and "r4" in store and "r0" not in store
    assert store.put("huge", _responses_store.Stored({"text": "x" * 5000}, [], "s9")) == []
    assert "huge" not in store


def test_retrieve_delete_and_cancel(run) -> None:
    async def go() -> None:
        rt = FakeRuntime(token_delay_s=0.01)
        async with serve_fake(rt) as c:
            done = checked(await c.post(URL, json=body()))
            assert checked(await c.get(f"{URL}/{done['id']}")) == done
            error_of(await c.get(f"{URL}/{done['id']}", params={"stream": "true"}), 400)
            err = error_of(await c.post(f"{URL}/{done['id']}/cancel"), 400)
            assert err["code"] == "response_not_cancellable"
            session = rt.requests[-1].session_id
            r = await c.delete(f"{URL}/{done['id']}")
            assert r.json() == {"id": done["id"], "object": "response.deleted", "deleted": True}
            assert session not in rt.seen_sessions  # its KV state is freed with it
            for call in (c.get(f"{URL}/{done['id']}"), c.delete(f"{URL}/{done['id']}"),
                         c.post(f"{URL}/resp_nope/cancel")):
                assert error_of(await call, 404)["code"] == "response_not_found"

            # a running stream, cancelled by id: it ends as cancelled, and cancel answers so
            streaming = asyncio.ensure_future(c.post(URL, json=body(stream=True, max_output_tokens=26)))
            while not rt.active:
                await asyncio.sleep(0.005)
            [response_id] = rt.active
            await asyncio.sleep(0.05)
            running = checked(await c.get(f"{URL}/{response_id}"))
            assert running["status"] == "in_progress"
            assert error_of(await c.delete(f"{URL}/{response_id}"), 400)["code"] == "response_in_progress"
            cancelled = checked(await c.post(f"{URL}/{response_id}/cancel"))
            assert cancelled["status"] == "cancelled" and response_id in rt.cancelled
            evs = events(await streaming)
            assert evs[-1]["type"] == "response.incomplete" and evs[-1]["response"] == cancelled
            text = cancelled["output"][0]["content"][0]["text"]
            assert 0 < len(text) < len(REPLY) and cancelled["output"][0]["status"] == "incomplete"
            assert checked(await c.get(f"{URL}/{response_id}")) == cancelled
    run(go())


def test_service_tier_flex_runs_at_batch_priority_and_extensions_reach_the_request(run) -> None:
    async def go() -> None:
        rt = FakeRuntime()
        async with serve_fake(rt) as c:
            r = checked(await c.post(URL, json=body(service_tier="flex", temperature=0.3, top_p=0.5, seed=7, top_k=5,
                                                    stop=["zz"], max_output_tokens=40)))
            request = rt.requests[-1]
            assert request.priority is Priority.BATCH and r["service_tier"] == "flex"
            sampler = request.params.sampler
            assert (sampler.temperature, sampler.top_p, sampler.seed, sampler.top_k) == (0.3, 0.5, 7, 5)
            assert "zz" in request.params.stop and request.params.max_tokens == 40
            assert (r["temperature"], r["top_p"]) == (0.3, 0.5) and request.request_id == r["id"]
    run(go())


def test_reasoning_becomes_a_reasoning_item_and_comes_back_as_reasoning_content() -> None:
    from botframework.chat.message import AssistantMessage, ToolCall
    from botframework.server.adapters._responses_items import OutputBuilder, chat_messages, message_pieces
    from botframework.server.adapters._responses_protocol import InputItem

    message = AssistantMessage(content="Calling.", reasoning_content="I should call it.",
                               tool_calls=(ToolCall("get_weather", '{"city": "Paris"}', id="call_9"),))
    builder = OutputBuilder()
    evs = [e for piece in message_pieces(message) for e in builder.feed(piece)] + builder.finish("completed")
    for number, event in enumerate(evs):
        EVENTS.validate_python({**event, "sequence_number": number})
    items = builder.items("completed")
    assert [item["type"] for item in items] == ["reasoning", "message", "function_call"]
    assert items[0]["content"] == [{"type": "reasoning_text", "text": "I should call it."}]
    assert [e["type"] for e in evs if e["type"].startswith("response.reasoning_text")] == [
        "response.reasoning_text.delta", "response.reasoning_text.done"]
    Response.model_validate({**checked_shape(), "output": items})
    # sent back as input, the three items are one assistant turn again
    assert chat_messages(TypeAdapter(list[InputItem]).validate_python(items)) == [
        {"role": "assistant", "content": "Calling.", "reasoning_content": "I should call it.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}]


def checked_shape() -> dict[str, Any]:
    """The least a Response object has (for checking output items alone)."""
    return {"id": "resp_1", "object": "response", "created_at": 0, "model": "m", "output": [],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
