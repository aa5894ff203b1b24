"""The Ollama API on the real server (subprocess, real models, real sockets), driven by the
official `ollama` package as Open WebUI and Continue users' code drives Ollama.

    python -m botframework.server --model smollm2-135m-instruct --model all-minilm-l6-v2
      ollama.Client(host=url): chat, generate (whole == streamed at temperature 0), embed,
      embeddings, list, ps, show, format schema, a tool call, pull, 404 as ResponseError
      httpx: a stream the client leaves frees its slot; keep_alive 0 unloads the model
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server_proc import metric, pulled, served

ollama = pytest.importorskip("ollama")

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
GREEDY = {"temperature": 0, "num_predict": 24}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def base_url(model_path: Path) -> Iterator[str]:  # model_path: the chat model through our own pull
    pulled(EMBED_MODEL)
    with served(["--model", CHAT_MODEL, "--model", EMBED_MODEL, "--ctx-size", "2048", "--parallel", "2",
                 "--log-level", "warning"]) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Any:
    return ollama.Client(host=base_url, timeout=120)


def stats(base_url: str) -> dict[str, int]:
    return httpx.get(f"{base_url}/v1/stats", timeout=10).json()  # type: ignore[no-any-return]


def wait_for(what: str, check: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_chat_whole_equals_streamed(client: Any) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat(model=CHAT_MODEL, messages=messages, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.message.content and whole.eval_count > 0 and whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration > 0 and whole.load_duration >= 0
    parts = list(client.chat(model=f"{CHAT_MODEL}:latest", messages=messages, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].eval_count == whole.eval_count
    assert parts[-1].model == f"{CHAT_MODEL}:latest"  # echoed as the client named it
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_generate_whole_equals_streamed(client: Any) -> None:
    whole = client.generate(model=CHAT_MODEL, prompt="Why is the sky blue?", options=GREEDY)
    assert whole.response and whole.done and whole.context and all(isinstance(t, int) for t in whole.context)
    parts = list(client.generate(model=CHAT_MODEL, prompt="Why is the sky blue?", options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


def native_tokens(base_url: str) -> float:
    """Tokens whose text a native run of steps sent to the client's socket itself."""
    return metric(base_url, "botframework_sse_direct_native_tokens_total")


def test_streams_a_native_run_sends_give_the_whole_text(client: Any, base_url: str) -> None:
    """Longer answers streamed alone (chat and generate): their steady tokens go out from
    native runs of steps as NDJSON lines, and the client reads the same text as the whole
    answer's, each line a well-formed chunk."""
    options = {"temperature": 0, "num_predict": 96}
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    for call, kwargs, text_of in (
            (client.chat, {"messages": messages}, lambda r: r.message.content),
            (client.generate, {"prompt": "Here is a Python function that adds two numbers:"}, lambda r: r.response)):
        whole = call(model=CHAT_MODEL, options=options, **kwargs)
        before = native_tokens(base_url)
        parts = list(call(model=CHAT_MODEL, options=options, stream=True, **kwargs))
        assert "".join(text_of(p) for p in parts) == text_of(whole)
        assert all(p.model == CHAT_MODEL and p.created_at and not p.done for p in parts[:-1]) and parts[-1].done
        wait_for("a token sent natively", lambda b=before: native_tokens(base_url) > b)


def test_embed_and_the_older_embeddings(client: Any) -> None:
    texts = ["The cat sat on the mat.", "A cat is sitting on a mat.", "Quarterly revenue grew by 8 percent."]
    got = np.asarray(client.embed(model=EMBED_MODEL, input=texts).embeddings, dtype=np.float32)
    assert got.shape == (3, 384) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2]  # meaningful
    one = np.asarray(client.embeddings(model=EMBED_MODEL, prompt=texts[0]).embedding, dtype=np.float32)
    np.testing.assert_allclose(one, got[0], atol=1e-5)
    short = client.embed(model=EMBED_MODEL, input=texts[0], dimensions=64).embeddings
    assert len(short) == 1 and len(short[0]) == 64


def test_list_ps_show(client: Any) -> None:
    names = {m.model for m in client.list().models}
    assert {f"{CHAT_MODEL}:latest", f"{EMBED_MODEL}:latest"} <= names
    running = {m.model: m for m in client.ps().models}
    chat = running[f"{CHAT_MODEL}:latest"]
    assert chat.context_length == 2048 and chat.size > 0 and chat.expires_at is not None
    assert chat.details.family == "llama" and chat.details.quantization_level == "Q4_1"
    shown = client.show(CHAT_MODEL)
    assert {"completion", "tools"} <= set(shown.capabilities) and "num_ctx 2048" in shown.parameters
    assert shown.modelinfo["general.architecture"] == "llama" and shown.template
    assert client.show(EMBED_MODEL).capabilities == ["embedding"]


def test_format_schema_is_enforced(client: Any) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat(model=CHAT_MODEL, format=schema, options={"temperature": 0, "num_predict": 40},
                        messages=[{"role": "user", "content": "Ollama is 22 years old. Give its name and age."}])
    value = json.loads(reply.message.content)
    assert set(value) == {"name", "age"} and isinstance(value["name"], str) and isinstance(value["age"], int)


def test_tool_call_comes_back_whole(client: Any) -> None:
    # Ollama has no tool_choice: an earlier call in the history shows the small model the way
    history = [{"role": "user", "content": "What is the weather in Oslo?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
               {"role": "tool", "tool_name": "get_weather", "content": "Rainy, 8 C"},
               {"role": "assistant", "content": "It is rainy in Oslo, 8 C."},
               {"role": "user", "content": "What is the weather in Paris?"}]
    options = {"temperature": 0, "num_predict": 40}
    reply = client.chat(model=CHAT_MODEL, messages=history, tools=[WEATHER], options=options)
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    parts = list(client.chat(model=CHAT_MODEL, messages=history, tools=[WEATHER], options=options, stream=True))
    streamed = [call for p in parts for call in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed] == [("get_weather", {"city": "Paris"})]


def test_unknown_model_is_a_404_response_error(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and err.value.error == 'model "no-such-model" not found, try pulling it first'


def test_pull_of_a_cached_catalog_model_reports_progress(client: Any) -> None:
    statuses = list(client.pull(CHAT_MODEL, stream=True))
    assert statuses[0].status == "pulling manifest" and statuses[-1].status == "success"
    assert any(s.total and s.completed == s.total and s.digest.startswith("sha256:") for s in statuses)
    assert client.pull(CHAT_MODEL).status == "success"


def test_a_stream_the_client_leaves_frees_its_slot(base_url: str) -> None:
    body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": True, "options": {"num_predict": 1000}}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{base_url}/api/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = r.iter_lines()
        for _ in range(3):
            assert json.loads(next(lines))["done"] is False
        assert stats(base_url)["num_busy_slots"] == 1  # still generating while we are connected
    wait_for("the sequence kept its slot after the client went away", lambda: stats(base_url)["num_busy_slots"] == 0)


def test_keep_alive_zero_unloads_after_the_request(client: Any, base_url: str) -> None:
    def loaded() -> bool:
        cards = httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"]
        return next(c for c in cards if c["id"] == CHAT_MODEL)["meta"]["state"] == "loaded"

    reply = client.generate(model=CHAT_MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive=0)
    assert reply.done
    wait_for("keep_alive 0 left the model loaded", lambda: not loaded())
    assert f"{CHAT_MODEL}:latest" not in {m.model for m in client.ps().models}
    client.chat(model=CHAT_MODEL, messages=[])  # an empty chat loads it again (keep-alive as configured)
    assert loaded() and f"{CHAT_MODEL}:latest" in {m.model for m in client.ps().models}
