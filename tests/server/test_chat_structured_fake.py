"""Structured output and tools over HTTP on the fake runtime: request checks, response and
stream shapes, validation of finished output, error mapping. No model.

The fake answers structured requests with `json_reply` and everything else with `reply`,
one character per token, so tool-call streaming is exercised character by character.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fake_runtime import FakeRuntime, serve_fake

CHAT = "/v1/chat/completions"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["n"], "additionalProperties": False}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]  # type: ignore[no-any-return]


def events(text: str) -> list[Any]:
    out = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in out]


def test_every_response_format_form_returns_the_validated_json(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(json_reply='{"n": 3}')) as c:
            for fmt in ({"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA, "strict": True}},
                        {"mode": "structured", "schema": SCHEMA}, {"type": "json_object"},
                        {"type": "json_object", "schema": SCHEMA}):
                r = await c.post(CHAT, json=body(response_format=fmt))
                assert r.status_code == 200, (fmt, r.text)
                choice = r.json()["choices"][0]
                assert json.loads(choice["message"]["content"]) == {"n": 3} and choice["finish_reason"] == "stop"
            r = await c.post(CHAT, json=body(response_format={"type": "text"}))
            assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake model."
    run(go())


def test_output_that_does_not_validate_is_never_returned(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(json_reply='{"n": 42}')) as c:
            fmt = {"mode": "structured", "schema": SCHEMA}
            err = error_of(await c.post(CHAT, json=body(response_format=fmt)), 500)
            assert err["code"] == "output_validation_failed" and "n" in err["message"]
            # streamed: the text went out, the end is an error event instead of a finish
            r = await c.post(CHAT, json=body(response_format=fmt, stream=True))
            evs = events(r.text)
            assert "error" in evs[-2] and evs[-2]["error"]["code"] == "output_validation_failed"
            assert evs[-1] == "[DONE]"
            assert not any(e != "[DONE]" and "choices" in e and e["choices"] and e["choices"][0]["finish_reason"]
                           for e in evs)
            # cut off by max_tokens: returned as is, finish_reason length, not validated
            r = await c.post(CHAT, json=body(response_format=fmt, max_tokens=3))
            assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    run(go())


@pytest.mark.native  # the schemas go through llama.cpp's JSON Schema -> GBNF converter
def test_unsupported_schema_is_a_400_listing_every_problem(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            schema = {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"},
                                                       "mail": {"type": "string", "format": "email"}}}
            err = error_of(await c.post(CHAT, json=body(response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})), 400)
            assert err["code"] == "unsupported_schema" and err["param"] == "response_format"
            assert "#/properties/zip" in err["message"] and "#/properties/mail" in err["message"]
            err = error_of(await c.post(CHAT, json=body(tools=[{"type": "function", "function": {
                "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number",
                                                                                   "minimum": 0}}}}}])), 400)
            assert err["code"] == "unsupported_schema" and err["param"] == "tools"
            for bad, param in ((body(response_format={"type": "json_schema"}), "response_format"),
                               (body(tool_choice="required"), "tool_choice"),
                               (body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}}),
                                "tool_choice"),
                               (body(tools=[WEATHER], grammar='root ::= "a"'), "tools"),
                               (body(grammar=""), "grammar")):
                assert error_of(await c.post(CHAT, json=bad), 400)["param"] == param, bad
            assert error_of(await c.post(CHAT, json=body(response_format={"mode": "structured", "schema": {
                "type": "wizard"}})), 400)["code"] == "invalid_grammar"
    run(go())


def test_tool_calls_whole_and_streamed(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(reply=CALL)) as c:
            r = await c.post(CHAT, json=body(tools=[WEATHER], tool_choice="required"))
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            message = choice["message"]
            assert message["content"] is None and message["role"] == "assistant"
            (call,) = message["tool_calls"]
            assert call["id"].startswith("call_") and call["type"] == "function"
            assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

            r = await c.post(CHAT, json=body(tools=[WEATHER], tool_choice="auto", stream=True))
            deltas = [e["choices"][0] for e in events(r.text) if e != "[DONE]" and e["choices"]]
            pieces = [d["delta"]["tool_calls"][0] for d in deltas if "tool_calls" in d["delta"]]
            assert pieces[0]["id"].startswith("call_") and pieces[0]["function"] == {"name": "get_weather",
                                                                                    "arguments": ""}
            assert all("id" not in p and "name" not in p["function"] for p in pieces[1:])
            assert len(pieces) > 5  # argument fragments as they were generated
            assert "".join(p["function"]["arguments"] for p in pieces) == '{"city": "Paris"}'
            assert deltas[-1]["finish_reason"] == "tool_calls"
            assert not any(d["delta"].get("content") for d in deltas)

            # tool_choice none: the same text is just content
            r = await c.post(CHAT, json=body(tools=[WEATHER], tool_choice="none"))
            assert r.json()["choices"][0]["message"]["content"] == CALL
            assert "tool_calls" not in r.json()["choices"][0]["message"]
    run(go())


def test_tool_turns_in_the_conversation_are_accepted(run) -> None:
    async def go() -> None:
        runtime = FakeRuntime()
        async with serve_fake(runtime) as c:
            messages = [{"role": "user", "content": "weather?"},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
            r = await c.post(CHAT, json=body(messages=messages, tools=[WEATHER]))
            assert r.status_code == 200, r.text
            sent, options = runtime.chat_plans[-1]
            assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
            assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
            assert options.tools[0].name == "get_weather"
    run(go())


def test_capabilities_lists_the_enforced_keywords(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            caps = (await c.get("/v1/capabilities")).json()
            keywords = caps["json_schema"]["enforced_keywords"]
            for keyword in ("type", "properties", "required", "additionalProperties", "items", "minItems",
                            "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "pattern", "format",
                            "minLength", "maxLength", "minimum", "maximum"):
                assert keyword in keywords
            assert "multipleOf" not in keywords and "uniqueItems" not in keywords
            assert caps["model"]["tool_format"] == "generic"
    run(go())
