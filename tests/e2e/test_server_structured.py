"""Structured output and tools through the real server (uvicorn subprocess, real model) and
the official `openai` package.

    client.chat.completions.parse(response_format=PydanticModel) -> .parsed instance
    tools: required / named -> tool_calls; the stream's pieces add up to the whole answer
    an unsupported schema -> openai.BadRequestError naming why; /v1/capabilities
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pydantic = pytest.importorskip("pydantic")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_server_openai import API_KEY, MODEL, base_url, client  # noqa: E402,F401  (module-scoped server)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)
    population: int = pydantic.Field(ge=0, le=50_000_000)


def test_parse_with_a_pydantic_model(client: Any) -> None:  # noqa: F811  (the imported fixture)
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], response_format=City,
        max_tokens=120, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content) == choice.message.parsed


def test_json_object_mode(client: Any) -> None:  # noqa: F811  (the imported fixture)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a JSON object with one key."}],
        response_format={"type": "json_object"}, max_tokens=64, temperature=0)
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content), dict)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}],
                         ids=["required", "named"])
def test_forced_tool_call_whole_and_streamed(client: Any, tool_choice: Any) -> None:  # noqa: F811  (the imported fixture)
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
              "tools": [WEATHER], "tool_choice": tool_choice, "max_tokens": 80, "temperature": 0}
    client.chat.completions.create(**kwargs)  # warm the prefix cache: both runs below reuse it
    whole = client.chat.completions.create(**kwargs)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    name, arguments, ids, finish = None, "", set(), None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or ():
            assert piece.index == 0
            if piece.id:
                ids.add(piece.id)
                name = piece.function.name
            arguments += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, arguments, finish) == ("get_weather", call.function.arguments, "tool_calls")
    assert len(ids) == 1


def test_tool_choice_none_answers_in_text(client: Any) -> None:  # noqa: F811  (the imported fixture)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Oslo?"}], tools=[WEATHER],
        tool_choice="none", max_tokens=32, temperature=0)
    assert not completion.choices[0].message.tool_calls and completion.choices[0].message.content


def test_unsupported_schema_is_a_bad_request_naming_why(client: Any) -> None:  # noqa: F811  (the imported fixture)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "zip", "schema": {
                "type": "object", "properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}}}}})
    assert info.value.code == "unsupported_schema" and info.value.param == "response_format"
    assert "#/properties/zip" in info.value.message and "\\d" in info.value.message


def test_grammar_and_schema_nested_past_the_limits_are_bad_requests(base_url: str) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {API_KEY}"}
    deep_schema: dict[str, Any] = {"type": "string"}
    for _ in range(300):  # 601 levels: jsonschema's own check recursed past Python's limit at ~100
        deep_schema = {"type": "array", "items": deep_schema}
    bodies = [  # each of these killed the server process (stack overflow) or was a 500
        {"grammar": "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": deep_schema}}},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": deep_schema}}}}]},
    ]
    for extra in bodies:
        r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra})
        assert r.status_code == 400, (list(extra), r.status_code, r.text[:300])
        assert "deep" in r.json()["error"]["message"]
    assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200


def test_a_grammar_that_allows_no_token_is_an_error_not_an_empty_answer(base_url: str) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
            "grammar": 'root ::= "Hi" [^\\x00-\\U0010FFFF]'}  # "Hi", then a class no character is in
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_grammar" and "generation stopped after" in err["message"]
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json={**body, "stream": True}, timeout=60)
    events = [line[len("data: "):] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "invalid_grammar"
    stats = httpx.get(f"{base_url}/v1/stats", headers=headers, timeout=10).json()
    assert stats["num_busy_slots"] == 0


def test_capabilities(base_url: str) -> None:  # noqa: F811  (the imported fixture)
    caps = httpx.get(f"{base_url}/v1/capabilities", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert "pattern" in caps["json_schema"]["enforced_keywords"]
    assert caps["model"]["id"] == MODEL and caps["model"]["tool_format"] == "generic"
