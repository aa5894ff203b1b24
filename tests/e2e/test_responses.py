"""The OpenAI Responses API (/v1/responses) on the real server and model, driven by the
official `openai` package: create, the stream helper, parse into a pydantic model, a two-turn
conversation whose second turn reuses the first one's KV state (cached input tokens), a
function-call round trip, retrieve / delete / cancel, streamed == whole at temperature 0, and
a client that leaves mid-stream freeing its slot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from server_proc import metric, served

openai = pytest.importorskip("openai")

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SENTENCE = {"stop": ["."]}  # extension: end at the first full stop, so answers finish ("completed") quickly


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, model id) of a server on the test model, pulled through our own pull."""
    with served(["--model", str(model_path), "--ctx-size", "2048", "--parallel", "2", "--log-level", "warning"]) \
            as (url, _proc):
        model_id = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        yield url, model_id


@pytest.fixture(scope="module")
def client(server: tuple[str, str]) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def model(server: tuple[str, str]) -> str:
    return server[1]


def _stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/v1/stats", timeout=10).json()  # type: ignore[no-any-return]


def _wait_for_idle(url: str, what: str) -> None:
    deadline = time.monotonic() + 10
    while _stats(url)["num_busy_slots"] != 0:
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_create_and_the_stream_helper_agree(client: Any, model: str) -> None:
    ask = {"model": model, "input": "What colour is the sky?", "max_output_tokens": 48, "temperature": 0,
           "extra_body": SENTENCE}
    client.responses.create(**ask)  # warm: both answers below read the prompt from the prefix cache
    whole = client.responses.create(**ask)
    assert whole.status == "completed" and whole.output_text and whole.output[0].type == "message"
    assert whole.usage.output_tokens > 0 and whole.usage.input_tokens > 0
    with client.responses.stream(**ask) as stream:
        kinds = []
        deltas = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(deltas) == final.output_text == whole.output_text  # streamed == whole at temperature 0
    assert final.usage.output_tokens == whole.usage.output_tokens


def _native_tokens(url: str) -> float:
    """Tokens whose text a native run of steps sent to the client's socket itself (server/direct.py)."""
    return metric(url, "botframework_sse_direct_native_tokens_total")


def test_a_longer_stream_goes_out_from_native_runs_numbered_and_whole(
        server: tuple[str, str], client: Any, model: str) -> None:
    """A stream alone on the server: once its message item is open, its text deltas are sent by
    native runs of steps, which number them on from the route's events (one sequence 0..n-1),
    and the client reads the same text as create's."""
    ask = {"model": model, "input": "Write a Python function that adds two numbers.", "max_output_tokens": 96,
           "temperature": 0}
    client.responses.create(**ask)  # warm: the prompt into the prefix cache, for both below
    whole = client.responses.create(**ask)
    before = _native_tokens(server[0])
    with client.responses.stream(**ask) as stream:
        events = list(stream)
    final = events[-1].response  # response.incomplete when it reaches max_output_tokens
    assert events[-1].type in ("response.completed", "response.incomplete") and final.status == whole.status
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens
    deadline = time.monotonic() + 10  # counted as the route closes the stream
    while _native_tokens(server[0]) <= before:
        assert time.monotonic() < deadline, "no token was sent natively"
        time.sleep(0.05)


def test_parse_into_a_pydantic_model(client: Any, model: str) -> None:
    parsed = client.responses.parse(model=model, input="Name a city and its country, as JSON.", text_format=City,
                                    max_output_tokens=64, temperature=0)
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, City)
    assert parsed.output_parsed.name and parsed.text.format.type == "json_schema"


def test_a_second_turn_reuses_the_first_turn_s_kv_state(client: Any, model: str) -> None:
    first = client.responses.create(model=model, input="My name is Ada. Say hello to me.", instructions="Be brief.",
                                    max_output_tokens=32, temperature=0, extra_body=SENTENCE)
    second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id,
                                     instructions="Be brief.", max_output_tokens=32, temperature=0,
                                     extra_body=SENTENCE)
    assert second.previous_response_id == first.id and second.output_text
    # the first turn's prompt and answer are not prefilled again: only the new tokens are
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens


def test_a_function_call_round_trip(client: Any, model: str) -> None:
    # the prompt into the prefix cache first: `asked` and the stream below then both read it from
    # there (a prompt prefilled whole and one read from the cache can differ in the last bits of
    # a logit, enough to flip a greedy near-tie on some CPUs: on AVX512/AMX here, a space)
    client.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                            tool_choice="required", max_output_tokens=64, temperature=0)
    asked = client.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64, temperature=0)
    [call] = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.arguments.startswith("{")
    with client.responses.stream(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=64, temperature=0) as stream:
        argument_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        streamed = stream.get_final_response()
    assert "".join(argument_deltas) == streamed.output[0].arguments == call.arguments
    answered = client.responses.create(
        model=model, previous_response_id=asked.id, tools=[WEATHER], tool_choice="none", max_output_tokens=32,
        temperature=0, extra_body=SENTENCE,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21, "sky": "clear"}'}])
    assert answered.status == "completed" and answered.output_text
    assert answered.usage.input_tokens_details.cached_tokens > 0


def test_retrieve_delete_and_errors(client: Any, model: str) -> None:
    made = client.responses.create(model=model, input="Hi", max_output_tokens=8, temperature=0)
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5", input="Hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input="Hi", tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0].type"


def _endless(model: str) -> dict[str, Any]:
    return {"model": model, "input": "Tell a long story.", "max_output_tokens": 1500,
            "extra_body": {"ignore_eos": True}}


def test_cancel_a_running_response(client: Any, model: str, server: tuple[str, str]) -> None:
    stream = client.responses.create(stream=True, **_endless(model))
    events = iter(stream)
    created = next(events)
    assert created.type == "response.created"
    num_deltas = 0
    while num_deltas < 3:
        num_deltas += next(events).type == "response.output_text.delta"
    cancelled = client.responses.cancel(created.response.id)
    assert cancelled.status == "cancelled" and cancelled.output_text
    last = [event for event in events][-1]
    assert last.type == "response.incomplete" and last.response.status == "cancelled"
    _wait_for_idle(server[0], "the cancelled response kept its slot")
    assert client.responses.retrieve(created.response.id).status == "cancelled"


def test_a_client_that_leaves_mid_stream_frees_the_slot(server: tuple[str, str], model: str) -> None:
    url = server[0]
    body = {**{k: v for k, v in _endless(model).items() if k != "extra_body"}, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{url}/v1/responses", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep the iterator: closing it closes the connection
        seen = 0
        while seen < 4:
            seen += next(lines).startswith("event: response.output_text.delta")
        assert _stats(url)["num_busy_slots"] == 1  # still generating while we are connected
        r.close()
    _wait_for_idle(url, "the sequence kept running after the client went away")
