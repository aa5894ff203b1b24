"""The official `anthropic` client against the real server and model over real sockets:
messages.create, messages.stream (== create at temperature 0), a tool_use round trip,
count_tokens, stop_sequences, the errors it names, and a disconnect mid-stream freeing the slot.

The client sends sampling fields (temperature) through extra_body: its create() has no
argument for them any more, and the API still takes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_proc import metric, served

anthropic = pytest.importorskip("anthropic")

MODEL = "smollm2-135m-instruct"
API_KEY = "anthropic-e2e-key"
GREEDY = {"temperature": 0}
COLOURS = [{"role": "user", "content": "Name three colours."}]
WEATHER = {"name": "get_weather", "description": "Get the weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[str]:
    # model_path: the model comes through our own pull; the server finds it in the cache by name
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048", "--api-key", API_KEY,
                 "--log-level", "warning"]) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=server, api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


def stats(url: str) -> dict[str, int]:
    r = httpx.get(f"{url}/v1/stats", headers={"x-api-key": API_KEY}, timeout=10)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def dumped(content: list[Any]) -> list[dict[str, Any]]:
    return [block.model_dump(exclude={"parsed_output"}, exclude_none=True) for block in content]


def test_create_and_stream_give_the_same_message(client: Any) -> None:
    created = client.messages.create(model=MODEL, max_tokens=48, messages=COLOURS, extra_body=GREEDY)
    assert created.type == "message" and created.role == "assistant" and created.id.startswith("msg_")
    assert created.content[0].type == "text" and created.content[0].text.strip()
    assert created.stop_reason in ("end_turn", "max_tokens") and created.usage.output_tokens > 0
    with client.messages.stream(model=MODEL, max_tokens=48, messages=COLOURS, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == created.content[0].text
    assert dumped(final.content) == dumped(created.content)
    assert (final.stop_reason, final.usage.output_tokens) == (created.stop_reason, created.usage.output_tokens)
    # the same prompt again: its prefix comes from the KV cache, and usage says so
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == created.usage.input_tokens + (created.usage.cache_read_input_tokens or 0)
    assert final.usage.cache_read_input_tokens > 0
    counted = client.messages.count_tokens(model=MODEL, messages=COLOURS)
    assert counted.input_tokens == total


def native_tokens(url: str) -> float:
    """Tokens whose text a native run of steps sent to the client's socket itself."""
    return metric(url, "botframework_sse_direct_native_tokens_total", {"x-api-key": API_KEY})


def test_a_stream_a_native_run_sends_gives_the_created_text(server: str, client: Any) -> None:
    """A longer answer streamed alone: its steady tokens go out from native runs of steps as
    content_block_delta events, and the client reads the same text as create's."""
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    created = client.messages.create(model=MODEL, max_tokens=96, messages=messages, extra_body=GREEDY)
    before = native_tokens(server)
    with client.messages.stream(model=MODEL, max_tokens=96, messages=messages, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == created.content[0].text and dumped(final.content) == dumped(created.content)
    assert final.stop_reason == created.stop_reason
    deadline = time.monotonic() + 10  # counted as the route closes the stream
    while native_tokens(server) <= before:
        assert time.monotonic() < deadline, "no token was sent natively"
        time.sleep(0.05)


def test_a_forced_tool_call_and_its_result(client: Any) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    called = client.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], messages=[ask],
                                    tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert called.stop_reason == "tool_use"
    (call,) = [block for block in called.content if block.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input.get("city"), str) and call.id
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C"}]}
    answered = client.messages.create(model=MODEL, max_tokens=40, tools=[WEATHER], tool_choice={"type": "none"},
                                      messages=[ask, {"role": "assistant", "content": called.content}, result],
                                      extra_body=GREEDY)
    assert answered.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in answered.content] == ["text"] and answered.content[0].text.strip()


def test_a_stop_sequence_ends_the_answer_and_is_named(client: Any) -> None:
    whole = client.messages.create(model=MODEL, max_tokens=48, messages=COLOURS, extra_body=GREEDY)
    text = whole.content[0].text
    stop = text.split()[1]  # a word the greedy answer will write again
    stopped = client.messages.create(model=MODEL, max_tokens=48, messages=COLOURS, stop_sequences=["\u00a7", stop],
                                     extra_body=GREEDY)
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    assert stop not in stopped.content[0].text and text.startswith(stopped.content[0].text)


def test_errors_are_the_clients_own_exceptions(server: str, client: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=8, messages=COLOURS)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0) as stranger, \
            pytest.raises(anthropic.AuthenticationError):
        stranger.messages.create(model=MODEL, max_tokens=8, messages=COLOURS)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server: str) -> None:
    # greedy, this prompt runs to max_tokens (~10 s here) unless it is stopped
    body = {"model": MODEL, "max_tokens": 1500, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon who learns to cook."}]}
    before = stats(server)["num_generated_tokens"]
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", f"{server}/v1/messages", json=body, headers={"x-api-key": API_KEY}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep the iterator: closing it closes the connection
        seen = 0
        while seen < 3:
            seen += next(lines) == "event: content_block_delta"
        assert stats(server)["num_busy_slots"] == 1  # still generating while we are connected
        r.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 5
    while stats(server)["num_busy_slots"] != 0:
        assert time.monotonic() < deadline, "the sequence kept running after the client went away"
        time.sleep(0.05)
    assert stats(server)["num_generated_tokens"] - before < 500
