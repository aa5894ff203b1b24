"""botframework.client against a real server over real sockets: the same calls and result types
as LocalLLM (one function runs on both), streaming, cancellation (by closing and by id, the slot
free afterwards), structured output, tools, embeddings, sessions, auto-start, and each error the
package names: server down, wrong API key, unknown model, busy with Retry-After, too long."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel
from server_proc import free_port, served

from botframework import (
    AuthenticationError,
    BusyError,
    ContextLengthExceededError,
    LocalLLM,
    ModelNotFoundError,
    ServerUnavailableError,
)
from botframework.api import GenerationResult
from botframework.client import AsyncClient, Client

MODEL = "smollm2-135m-instruct"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[str]:
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "1024"]) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Client]:
    with Client(MODEL, base_url=server) as llm:
        yield llm


def wait_idle(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        stats = httpx.get(f"{url}/v1/stats", timeout=5).json()
        if stats["num_busy_slots"] == 0 and stats["num_running"] == 0 and stats["num_waiting"] == 0:
            return stats
        assert time.monotonic() < deadline, f"the server kept a slot busy: {stats}"
        time.sleep(0.05)


def one_workflow(llm: Any) -> dict[str, Any]:
    """The same code on LocalLLM and on Client: what 'change one line' promises."""
    reply = llm.chat("Say hello.", max_tokens=8, temperature=0)
    streamed = "".join(llm.stream_chat("Say hello.", max_tokens=8, temperature=0))
    person = llm.chat("Invent a person.", schema=Person, max_tokens=60, temperature=0)
    called = llm.chat("What is the weather in Paris?", tools=TOOLS, tool_choice="required", max_tokens=60,
                      temperature=0)
    with llm.session(system="You are terse.") as session:
        session.chat("My name is Ada.", max_tokens=6, temperature=0)
        second = session.chat("What is my name?", max_tokens=6, temperature=0)
    vectors = llm.embed(["a cat", "a dog"])
    return {"reply": reply, "streamed": streamed, "person": person, "called": called, "second": second,
            "vectors": vectors}


def test_the_same_code_runs_in_process_and_over_http(client: Client, model_path: Path) -> None:
    over_http = one_workflow(client)
    with LocalLLM(model_path, n_ctx=1024) as llm:
        in_process = one_workflow(llm)
    for result in (over_http, in_process):
        assert isinstance(result["reply"], GenerationResult) and result["reply"].usage.completion_tokens == 8
        assert isinstance(result["person"], Person)
        assert [call.name for call in result["called"].tool_calls] == ["get_weather"]
        assert result["second"].usage.cached_tokens > 0  # the session's second turn reused its KV state
        assert len(result["vectors"]) == 2 and all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3)
                                                   for v in result["vectors"])
    # greedy decoding of the same model: the same words either way
    assert over_http["reply"].text == in_process["reply"].text
    assert over_http["streamed"] == in_process["streamed"] == in_process["reply"].text


def test_structured_output_is_validated_against_its_schema(client: Client) -> None:
    value = client.chat("Invent a person.", schema=PERSON, max_tokens=120, temperature=0)
    jsonschema.validate(value, PERSON)
    person = client.chat("Invent a person.", schema=Person, max_tokens=120, temperature=0)
    assert isinstance(person, Person)


def test_tool_calls_carry_ids_and_json_arguments(client: Client) -> None:
    import json

    result = client.chat("What is the weather in Paris?", tools=TOOLS,
                         tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=120,
                         temperature=0)
    (call,) = result.tool_calls
    assert call.id and call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    assert result.finish_reason == "tool_calls"


def test_a_stream_shows_its_id_usage_and_finish(client: Client) -> None:
    with client.stream_chat("Count to twenty.", max_tokens=12, ignore_eos=True) as stream:
        pieces = list(stream)
    assert stream.id and stream.id.startswith("chatcmpl-")
    assert stream.finish_reason == "length" and stream.usage is not None and stream.usage.completion_tokens == 12
    assert "".join(pieces)
    completion = list(client.stream_complete("The capital of France is", max_tokens=5))
    assert completion


def test_closing_a_stream_mid_way_frees_its_slot(client: Client, server: str) -> None:
    stream = client.stream_chat("Write a long story.", max_tokens=2000, ignore_eos=True)
    for _ in range(3):
        next(stream)
    assert httpx.get(f"{server}/v1/stats", timeout=5).json()["num_busy_slots"] >= 1
    stream.close()
    wait_idle(server)


def test_cancel_by_id_ends_the_stream_and_frees_its_slot(client: Client, server: str) -> None:
    stream = client.stream_chat("Write a long story.", max_tokens=2000, ignore_eos=True)
    request_id = stream.read_id()
    assert request_id is not None
    next(stream)
    assert client.cancel(request_id) == 1
    rest = list(stream)  # ends, early
    assert len(rest) < 1990 and stream.usage is not None and stream.usage.completion_tokens < 2000
    wait_idle(server)
    assert client.cancel("chatcmpl-nothing-runs-under-this-id") == 0


def test_a_session_is_freed_on_close(client: Client, server: str) -> None:
    session = client.session()
    session.chat("Hello.", max_tokens=4)
    info = httpx.get(f"{server}/v1/sessions/{session.id}", timeout=5).json()
    assert info["num_cached_tokens"] > 0
    session.close()
    assert httpx.get(f"{server}/v1/sessions/{session.id}", timeout=5).status_code == 404
    assert client.drop_session(session.id) is False


def test_embeddings_and_models(client: Client) -> None:
    (vector,) = client.embed("one sentence")
    assert len(vector) == 576
    assert [card["id"] for card in client.models()] == [MODEL]
    assert client.models()[0]["meta"]["state"] == "loaded"
    assert client.tokenize("hello world")


def test_unknown_model_and_context_overflow(server: str, client: Client) -> None:
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        Client("no-such-model", base_url=server).chat("hi")
    with pytest.raises(ContextLengthExceededError) as overflow:
        client.chat("word " * 2000, max_tokens=4)
    assert overflow.value.num_ctx == 1024 and overflow.value.num_prompt_tokens > 1024


def test_no_server_is_a_clear_error() -> None:
    with pytest.raises(ServerUnavailableError, match="botframework serve"):
        Client(MODEL, base_url=f"http://127.0.0.1:{free_port()}", max_retries=0).chat("hi")


def test_a_wrong_api_key_is_an_authentication_error(model_path: Path) -> None:
    with served(["--model", MODEL, "--api-key", "right-key", "--ctx-size", "1024"]) as (url, _proc):
        with pytest.raises(AuthenticationError):
            Client(MODEL, base_url=url, api_key="wrong-key").chat("hi", max_tokens=2, ignore_eos=True)
        with pytest.raises(AuthenticationError):
            Client(MODEL, base_url=url).models()
        assert Client(MODEL, base_url=url, api_key="right-key").chat("hi", max_tokens=2, ignore_eos=True).usage.completion_tokens == 2


def test_busy_is_a_busy_error_with_retry_after_and_retries_when_asked(model_path: Path) -> None:
    with served(["--model", MODEL, "--parallel", "1", "--max-queue", "1", "--ctx-size", "1024"]) as (url, _proc):
        holder = Client(MODEL, base_url=url)
        running = holder.stream_chat("Write a long story.", max_tokens=3000, ignore_eos=True)
        next(running)  # in the one slot
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the server answers once the first token is out
            waiting = pool.submit(Client(MODEL, base_url=url).chat, "hi", max_tokens=3, ignore_eos=True)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/v1/stats", timeout=5).json()["num_waiting"] < 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.05)
            with pytest.raises(BusyError) as busy:
                Client(MODEL, base_url=url, max_retries=0).chat("hi", max_tokens=2, ignore_eos=True)
            assert busy.value.retry_after_s >= 1
            running.close()
            assert waiting.result(timeout=60).usage.completion_tokens == 3
        # once the queue has room, a client that retries gets through
        assert Client(MODEL, base_url=url, max_retries=3).chat("hi", max_tokens=2, ignore_eos=True).usage.completion_tokens == 2
        holder.close()


def test_auto_start_serves_a_gguf_path_and_close_stops_it(model_path: Path, tmp_path: Path) -> None:
    import os

    local = tmp_path / "coder.gguf"
    os.link(model_path, local) if model_path.stat().st_dev == tmp_path.stat().st_dev else local.symlink_to(model_path)
    url = f"http://127.0.0.1:{free_port()}"
    with Client(local, base_url=url, auto_start=True, server_args=["--ctx-size", "1024"]) as llm:
        assert llm.chat("hi", max_tokens=3, ignore_eos=True).usage.completion_tokens == 3
        assert llm.model == "coder"
        server = llm.server
        assert server is not None
    assert server.wait(timeout=30) is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_async_client(server: str) -> None:
    async def main() -> None:
        async with AsyncClient(MODEL, base_url=server) as llm:
            reply = await llm.chat("Say hello.", max_tokens=6, temperature=0)
            assert reply.usage.completion_tokens == 6
            stream = await llm.stream_chat("Say hello.", max_tokens=6, temperature=0)
            assert "".join([piece async for piece in stream]) == reply.text
            person = await llm.chat("Invent a person.", schema=Person, max_tokens=120, temperature=0)
            assert isinstance(person, Person)
            long = await llm.stream_chat("Write a long story.", max_tokens=2000, ignore_eos=True)
            assert await long.read_id()
            await long.aclose()
            session = llm.session()
            await session.chat("My name is Ada.", max_tokens=4)
            second = await session.chat("And yours?", max_tokens=4)
            assert second.usage.cached_tokens > 0
            await session.close()
            assert len(await llm.embed(["a", "b"])) == 2
            several = await asyncio.gather(*(llm.chat(f"Say {i}.", max_tokens=4, ignore_eos=True) for i in range(4)))
            assert all(r.usage.completion_tokens == 4 for r in several)

    asyncio.run(main())
    wait_idle(server)


def test_a_path_names_the_model_a_server_was_started_with(model_path: Path, tmp_path: Path) -> None:
    """No model folders configured: the path of the file the server serves still names it
    (POST /v1/models/{path}/load finds the declared file); any other path is refused."""
    from botframework import InvalidRequestError

    with served(["--model", str(model_path), "--ctx-size", "1024"]) as (url, _proc):
        with Client(model_path, base_url=url) as llm:
            assert llm.chat("hi", max_tokens=2, ignore_eos=True).usage.completion_tokens == 2
            assert llm.model == model_path.stem
        other = tmp_path / "other.gguf"
        other.write_bytes(model_path.read_bytes()[:1 << 16])
        with pytest.raises(InvalidRequestError, match="--models-dir") as refused:
            Client(other, base_url=url).chat("hi")
        assert refused.value.code == "model_path_not_allowed"
