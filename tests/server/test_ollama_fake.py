"""The Ollama adapter on a fake runtime: shapes, NDJSON framing, option mapping onto the engine
request, keep-alive, errors (shape and status) for bad bodies. No model, no sockets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.errors import BusyError, ModelNotFoundError
from botframework.runtime import pull as pulling
from botframework.runtime.registry import KEEP_FOREVER
from botframework.server.adapters._ollama_protocol import keep_alive_seconds

REPLY = "Hello from the fake model."
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
           "eval_duration")
USER = [{"role": "user", "content": "hi"}]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, "stream": False, **extra}


def gen(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "prompt": "Once", "stream": False, **extra}


def ndjson(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.text.endswith("\n")
    return [json.loads(item) for item in r.text.split("\n")[:-1]]


def assert_error(r: httpx.Response, status: int, *, contains: str = "") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert contains in body["error"], body
    return str(body["error"])


def assert_final(obj: dict[str, Any], *, reason: str) -> None:
    assert obj["done"] is True and obj["done_reason"] == reason
    for key in METRICS:
        assert isinstance(obj[key], int) and obj[key] >= 0, (key, obj)
    assert obj["total_duration"] >= obj["load_duration"]
    assert obj["created_at"].endswith("+00:00")


def test_chat_whole_shape_and_latest_tag(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post("/api/chat", json=chat(model="fake-model:latest"))
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["model"] == "fake-model:latest"  # echoed as the client named it
            assert body["message"] == {"role": "assistant", "content": REPLY}
            assert_final(body, reason="stop")
            assert body["eval_count"] == len(REPLY) and body["prompt_eval_count"] > 0
    run(go())


def test_chat_stream_is_ndjson_and_adds_up(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            lines = ndjson(await c.post("/api/chat", json={"model": "fake-model", "messages": USER}))  # default stream
            assert all(line["done"] is False and line["message"]["role"] == "assistant" for line in lines[:-1])
            assert "".join(line["message"]["content"] for line in lines) == REPLY
            assert_final(lines[-1], reason="stop")
            assert lines[-1]["message"] == {"role": "assistant", "content": ""}
            cut = ndjson(await c.post("/api/chat", json=chat(stream=True, options={"num_predict": 5})))
            assert "".join(line["message"]["content"] for line in cut) == "Hello"
            assert_final(cut[-1], reason="length")
            assert cut[-1]["eval_count"] == 5
    run(go())


def test_generate_whole_stream_raw_suffix_and_context(run) -> None:
    async def go() -> None:
        fake = FakeRuntime()
        async with serve_fake(fake) as c:
            body = (await c.post("/api/generate", json=gen(system="Be brief."))).json()
            assert body["response"] == REPLY and body["model"] == "fake-model"
            assert_final(body, reason="stop")
            messages, _ = fake.chat_plans[-1]
            assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == "Once"
            assert body["context"][: len(fake.requests[-1].prompt_tokens)] == list(fake.requests[-1].prompt_tokens)
            lines = ndjson(await c.post("/api/generate", json=gen(system="Be brief.", stream=True)))
            assert "".join(line["response"] for line in lines) == REPLY and lines[-1]["context"] == body["context"]
            raw = (await c.post("/api/generate", json=gen(raw=True, prompt="<s>[INST] x [/INST]"))).json()
            assert "context" not in raw and fake.requests[-1].prompt_tokens == tuple(
                fake.tokenize("<s>[INST] x [/INST]", add_special=True))
            fim = (await c.post("/api/generate", json=gen(prompt="def f(", suffix="    return x"))).json()
            assert fim["response"] == REPLY and fake.last_infill == ("def f(", "    return x", "")
            # the deprecated context of an earlier answer comes first
            await c.post("/api/generate", json=gen(context=[7, 8, 9]))
            assert fake.requests[-1].prompt_tokens[:4] == (7, 8, 9, fake.tokenize("<", add_special=False)[0])
    run(go())


def test_options_reach_the_engine_request(run) -> None:
    async def go() -> None:
        fake = FakeRuntime()
        async with serve_fake(fake) as c:
            options = {"temperature": 0.3, "top_k": 7, "top_p": 0.5, "min_p": 0.2, "repeat_penalty": 1.3,
                       "presence_penalty": 0.4, "frequency_penalty": 0.1, "seed": 42, "num_predict": 9,
                       "stop": ["END", "\n\n"], "typical_p": 1.0, "repeat_last_n": 64, "mirostat": 0,
                       "num_thread": 4, "use_mmap": True, "num_gpu": 99, "some_future_option": 1}
            r = await c.post("/api/chat", json=chat(options=options))
            assert r.status_code == 200, r.text
            params = fake.requests[-1].params
            sampler = params.sampler
            assert (sampler.temperature, sampler.top_k, sampler.top_p, sampler.min_p) == (0.3, 7, 0.5, 0.2)
            assert (sampler.repeat_penalty, sampler.presence_penalty, sampler.frequency_penalty) == (1.3, 0.4, 0.1)
            assert sampler.seed == 42 and params.max_tokens == 9 and params.stop[:2] == ("END", "\n\n")
            # -1 / -2 / 0: until the context; a negative seed: random
            await c.post("/api/chat", json=chat(options={"num_predict": -1, "seed": -1}))
            assert fake.requests[-1].params.max_tokens > 9 and fake.requests[-1].params.sampler.seed is None
            # num_ctx below the loaded context bounds prompt + answer; above it changes nothing
            await c.post("/api/generate", json=gen(raw=True, prompt="abcd", options={"num_ctx": 10}))
            assert fake.requests[-1].params.max_tokens == 10 - len(fake.tokenize("abcd", add_special=True))
            await c.post("/api/generate", json=gen(raw=True, prompt="abcd", options={"num_ctx": 100_000}))
            assert fake.requests[-1].params.max_tokens == 512 - 5
            r = await c.post("/api/chat", json=chat(logprobs=True, top_logprobs=1, options={"num_predict": 2}))
            assert [e["token"] for e in r.json()["logprobs"]] == ["H", "e"]
            assert fake.requests[-1].params.num_logprobs == 1
    run(go())


@pytest.mark.parametrize("options, named", [
    ({"mirostat": 2}, "options.mirostat"), ({"tfs_z": 0.5}, "options.tfs_z"), ({"typical_p": 0.7}, "options.typical_p"),
    ({"repeat_last_n": 128}, "options.repeat_last_n"), ({"num_predict": 10**9}, "options.num_predict"),
    ({"temperature": -1}, "temperature"), ({"top_p": 3}, "top_p"), ({"seed": 2**40}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "options.stop"), ({"temperature": "hot"}, "options.temperature"),
    ({"stop": [1]}, "options.stop")])
def test_options_that_cannot_be_honoured_are_400(run, options: dict[str, Any], named: str) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            assert_error(await c.post("/api/chat", json=chat(options=options)), 400, contains=named)
    run(go())


def test_format_json_and_schema_are_structured_output(run) -> None:
    async def go() -> None:
        fake = FakeRuntime(json_reply='{"age": 22}')
        async with serve_fake(fake) as c:
            schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
            body = (await c.post("/api/chat", json=chat(format=schema))).json()
            assert json.loads(body["message"]["content"]) == {"age": 22}
            assert dict(fake.chat_plans[-1][1].structured.schema) == schema
            body = (await c.post("/api/generate", json=gen(format="json"))).json()
            assert json.loads(body["response"]) == {"age": 22}
            assert dict(fake.chat_plans[-1][1].structured.schema) == {"type": "object"}
            lines = ndjson(await c.post("/api/chat", json=chat(format=schema, stream=True)))
            assert "".join(line["message"]["content"] for line in lines) == '{"age": 22}'
            assert_error(await c.post("/api/chat", json=chat(format="yaml")), 400, contains="format")
            assert_error(await c.post("/api/chat", json=chat(format={"type": "object", "patternProperties": {
                "^x": {"type": "string"}}})), 400, contains="patternProperties")
        bad = FakeRuntime(json_reply='{"age": "old"}')  # output that fails the schema: never returned as valid
        async with serve_fake(bad) as c:
            assert_error(await c.post("/api/chat", json=chat(format=schema)), 500)
            lines = ndjson(await c.post("/api/chat", json=chat(format=schema, stream=True)))
            assert set(lines[-1]) == {"error"}
    run(go())


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def test_tools_calls_come_back_in_ollamas_shape(run) -> None:
    async def go() -> None:
        fake = FakeRuntime(reply=CALL)
        async with serve_fake(fake) as c:
            history = [*USER, {"role": "assistant", "content": "",
                               "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                       {"role": "tool", "tool_name": "get_weather", "content": "Rainy"},
                       {"role": "user", "content": "And Paris?"}]
            body = (await c.post("/api/chat", json=chat(messages=history, tools=[WEATHER]))).json()
            (call,) = body["message"]["tool_calls"]
            assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
            assert call["id"] and body["done_reason"] == "stop"
            messages, options = fake.chat_plans[-1]
            assert [t.name for t in options.tools] == ["get_weather"] and options.tool_choice.mode.value == "auto"
            assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
            assert messages[2] == {"role": "tool", "content": "Rainy", "name": "get_weather"}
            lines = ndjson(await c.post("/api/chat", json=chat(tools=[WEATHER], stream=True)))
            with_calls = [line for line in lines if line["message"].get("tool_calls")]
            assert len(with_calls) == 1 and not with_calls[0]["done"]  # whole, in one chunk, before the last
            assert with_calls[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
            assert_final(lines[-1], reason="stop")
            assert_error(await c.post("/api/chat", json=chat(tools=[{"type": "function", "function": {
                "name": "bad name!"}}])), 400, contains="tools")
            assert_error(await c.post("/api/chat", json=chat(tools=[WEATHER], format="json")), 400,
                         contains="format and tools")
    run(go())


def test_think(run) -> None:
    async def go() -> None:
        fake = FakeRuntime()
        async with serve_fake(fake) as c:
            # the fake's template does not reason: think is refused as Ollama refuses it
            assert_error(await c.post("/api/chat", json=chat(think=True)), 400,
                         contains='"fake-model" does not support thinking')
            assert_error(await c.post("/api/generate", json=gen(think="high")), 400, contains="thinking")
            assert_error(await c.post("/api/generate", json=gen(raw=True, think=True)), 400, contains="think")
            assert (await c.post("/api/chat", json=chat(think=False))).status_code == 200
            assert fake.chat_plans[-1][1].enable_thinking is False
            await c.post("/api/chat", json=chat())
            assert fake.chat_plans[-1][1].enable_thinking is True
    run(go())


def test_keep_alive_drives_the_registry(run) -> None:
    async def go() -> None:
        fake = FakeRuntime()
        async with serve_fake(fake) as c:
            registry = c._transport.app.state.registry  # type: ignore[attr-defined]
            assert (await c.post("/api/chat", json=chat(keep_alive="1h30m"))).status_code == 200
            assert registry.keep_alive_s("fake-model") == 5400
            await c.post("/api/generate", json=gen(keep_alive=-1))
            assert registry.keep_alive_s("fake-model") == KEEP_FOREVER
            await c.post("/api/chat", json=chat(keep_alive=0))
            for _ in range(100):  # the unload runs once the response is sent
                if registry.peek("fake-model") is None:
                    break
                await asyncio_sleep()
            assert registry.peek("fake-model") is None and fake.closed
            assert (await c.get("/api/ps")).json() == {"models": []}
            # an empty chat loads the model; with keep_alive 0 it unloads it
            body = (await c.post("/api/chat", json={"model": "fake-model", "messages": []})).json()
            assert body["done"] and body["done_reason"] == "load" and body["message"]["content"] == ""
            assert registry.peek("fake-model") is not None and registry.keep_alive_s("fake-model") == KEEP_FOREVER
            body = (await c.post("/api/generate", json={"model": "fake-model", "keep_alive": "0s"})).json()
            assert body == {"model": "fake-model", "created_at": body["created_at"], "response": "", "done": True,
                            "done_reason": "unload"}
            assert registry.peek("fake-model") is None
            assert_error(await c.post("/api/chat", json=chat(keep_alive="5 minutes")), 400, contains="keep_alive")
    run(go())


async def asyncio_sleep() -> None:
    import asyncio

    await asyncio.sleep(0.01)


@pytest.mark.parametrize("value, seconds", [("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3),
                                            (30, 30.0), ("30", 30.0), (0, 0.0), ("0", 0.0), (-1, KEEP_FOREVER),
                                            ("-5m", KEEP_FOREVER), ("1e400", KEEP_FOREVER), (1e300, KEEP_FOREVER),
                                            (None, None)])
def test_keep_alive_values(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


def test_embed_and_embeddings(run) -> None:
    async def go() -> None:
        fake = FakeRuntime()
        async with serve_fake(fake) as c:
            body = (await c.post("/api/embed", json={"model": "fake-model", "input": ["a", "bb"]})).json()
            assert body["model"] == "fake-model" and len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 8
            assert body["prompt_eval_count"] == 2 + 3
            assert all(isinstance(body[k], int) for k in ("total_duration", "load_duration"))
            one = (await c.post("/api/embed", json={"model": "fake-model", "input": "a", "dimensions": 4})).json()
            assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 4
            assert abs(sum(x * x for x in one["embeddings"][0]) - 1) < 1e-5
            big = (await c.post("/api/embed", json={"model": "fake-model", "input": "a", "dimensions": 99})).json()
            assert len(big["embeddings"][0]) == 8  # Ollama shortens only below the model's size
            old = (await c.post("/api/embeddings", json={"model": "fake-model", "prompt": "a"})).json()
            assert old == {"embedding": body["embeddings"][0]}
            empty = (await c.post("/api/embed", json={"model": "fake-model", "input": ""})).json()
            assert empty["embeddings"] == []
            assert (await c.post("/api/embeddings", json={"model": "fake-model"})).json() == {"embedding": []}
            assert_error(await c.post("/api/embed", json={"model": "fake-model", "input": ["a", ""]}), 400)
            assert_error(await c.post("/api/embed", json={"model": "fake-model", "input": [1, 2]}), 400)
            assert_error(await c.post("/api/embed", json={"model": "fake-model", "input": ["x"] * 257}), 400)
    run(go())


def test_tags_ps_show_version_root(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            tags = (await c.get("/api/tags")).json()["models"]
            mine = next(m for m in tags if m["model"] == "fake-model:latest")
            assert mine["name"] == "fake-model:latest" and len(mine["digest"]) == 64
            assert set(mine) == {"name", "model", "modified_at", "size", "digest", "details"}
            assert mine["details"]["format"] == "gguf"
            (running,) = (await c.get("/api/ps")).json()["models"]
            assert running["model"] == "fake-model:latest" and running["context_length"] == 512
            assert running["expires_at"] > "2300"  # keep-alive -1: Ollama's far future
            assert running["size_vram"] == 0  # nothing offloaded (n_gpu_layers "auto" is not a GPU)
            for key in ("name", "model", "modified_at"):
                shown = (await c.post("/api/show", json={key if key != "modified_at" else "model": "fake-model"}))
                assert shown.status_code == 200
            shown = shown.json()
            assert shown["capabilities"] == ["completion", "tools"] and shown["parameters"] == "num_ctx 512"
            assert {"modelfile", "template", "details", "model_info", "modified_at"} <= set(shown)
            assert_error(await c.post("/api/show", json={"model": "nope"}), 404, contains='model "nope" not found')
            assert_error(await c.post("/api/show", json={}), 400, contains="model is required")
            assert (await c.get("/api/version")).json()["version"].count(".") == 2
            root = await c.get("/")
            assert root.status_code == 200 and root.text == "Ollama is running"
            head = await c.head("/")
            assert head.status_code == 200 and head.content == b""
            assert (await c.head("/api/tags")).status_code == 200
    run(go())


def test_pull_reports_ollamas_statuses_and_declares_the_model(run, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    fetched = tmp_path / "all-MiniLM-L6-v2.gguf"
    fetched.write_bytes(b"GGUF" + bytes(60))
    calls: list[str] = []

    def resolve(spec: str, **_: Any) -> Path:
        if not calls:
            raise ModelNotFoundError("not cached")
        return fetched

    def pull(spec: str, **_: Any) -> Path:
        calls.append(spec)
        return fetched

    monkeypatch.setattr(pulling, "resolve_model", resolve)
    monkeypatch.setattr(pulling, "pull", pull)

    async def go() -> None:
        async with serve_fake() as c:
            lines = ndjson(await c.post("/api/pull", json={"model": "all-minilm-l6-v2:latest"}))
            assert calls == ["all-minilm-l6-v2"]
            assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
            done = [line for line in lines if line.get("completed")]
            assert done and done[0]["completed"] == done[0]["total"] and done[0]["digest"].startswith("sha256:")
            names = {m["model"] for m in (await c.get("/api/tags")).json()["models"]}
            assert "all-minilm-l6-v2:latest" in names  # declared: usable by name at once
            body = await c.post("/api/pull", json={"name": "all-minilm-l6-v2", "stream": False})
            assert body.json() == {"status": "success"} and calls == ["all-minilm-l6-v2"]  # cached now
            assert_error(await c.post("/api/pull", json={"model": "llama3"}), 404, contains="catalog")
            assert_error(await c.post("/api/pull", json={}), 400, contains="model is required")
    run(go())


def test_pull_refused_when_the_server_does_not_download(run, monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(spec: str, **_: Any) -> Path:
        raise ModelNotFoundError("not cached")

    monkeypatch.setattr(pulling, "resolve_model", resolve)

    async def go() -> None:
        async with serve_fake(pull_missing=False) as c:
            assert_error(await c.post("/api/pull", json={"model": "smollm2-135m-instruct", "stream": False}), 403,
                         contains="pull_missing")
            lines = ndjson(await c.post("/api/pull", json={"model": "smollm2-135m-instruct"}))
            assert lines[0] == {"status": "pulling manifest"} and "pull_missing" in lines[-1]["error"]
    run(go())


def test_an_engine_error_mid_stream_is_an_error_line(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(error_after=3)) as c:
            lines = ndjson(await c.post("/api/generate", json=gen(stream=True)))
            assert "".join(line.get("response", "") for line in lines[:-1]) == "Hel"
            assert set(lines[-1]) == {"error"} and "llama_decode" in lines[-1]["error"]
            # whole: the engine's failure is the status, mapped as on /v1 (errors.to_api_error)
            assert_error(await c.post("/api/chat", json=chat()), 500, contains="the engine failed")
    run(go())


def test_busy_is_503_with_retry_after(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(submit_error=BusyError("the queue is full", retry_after_s=3))) as c:
            r = await c.post("/api/chat", json=chat())
            assert_error(r, 503, contains="queue is full")
            assert r.headers["retry-after"] == "3"
    run(go())


def test_api_key_errors_are_ollama_shaped(run) -> None:
    async def go() -> None:
        async with serve_fake(api_keys=("k",)) as c:
            assert_error(await c.post("/api/chat", json=chat()), 401, contains="API key")
            assert_error(await c.get("/api/tags"), 401)
            ok = await c.post("/api/chat", json=chat(), headers={"authorization": "Bearer k"})
            assert ok.status_code == 200
            assert (await c.get("/")).status_code == 200 and (await c.get("/api/version")).status_code == 200
    run(go())


MALFORMED: list[tuple[str, Any, str]] = [
    ("/api/chat", b"", "missing request body"),
    ("/api/chat", b"{not json", "invalid JSON"),
    ("/api/chat", b"[1, 2]", "must be a JSON object"),
    ("/api/chat", b'{"model": "fake-model", "messages": NaN}', "invalid JSON"),
    ("/api/chat", {"messages": USER}, "model is required"),
    ("/api/chat", {"model": 7, "messages": USER}, "model"),
    ("/api/chat", {"model": "fake-model", "messages": "hi"}, "messages"),
    ("/api/chat", {"model": "fake-model", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ("/api/chat", {"model": "fake-model", "messages": [{"role": "user", "content": 5}]}, "content"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "options": []}, "options"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "stream": "maybe"}, "stream"),
    ("/api/chat", {"model": "fake-model", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
     "images"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "think": "very"}, "think"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "top_logprobs": 99}, "top_logprobs"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "keep_alive": True}, "keep_alive"),
    ("/api/chat", b'{"model": "fake-model", "messages": [], "keep_alive": 1e400}', "keep_alive"),
    ("/api/chat", b'{"model": "fake-model", "messages": [], "options": {"temperature": 1e400}}', "temperature"),
    ("/api/chat", {"model": "fake-model", "messages": USER, "options": {"presence_penalty": 5}}, "presence_penalty"),
    ("/api/generate", {"model": "fake-model", "prompt": ["x"]}, "prompt"),
    ("/api/generate", {"model": "fake-model", "prompt": "x", "images": ["aGk="]}, "images"),
    ("/api/generate", {"model": "fake-model", "prompt": "x", "template": "{{ .System }} {{ .Prompt }}"}, "template"),
    ("/api/generate", {"model": "fake-model", "prompt": "x", "raw": True, "system": "s"}, "raw mode"),
    ("/api/generate", {"model": "fake-model", "prompt": "x", "context": [10**9]}, "vocabulary"),
    ("/api/generate", {"model": "fake-model", "prompt": "x" * 600}, "context length"),
    ("/api/embed", {"model": "fake-model", "input": {"a": 1}}, "input"),
    ("/api/embed", {"model": "fake-model", "input": "x", "dimensions": -3}, "dimensions"),
    ("/api/show", b"null", "must be a JSON object"),
    ("/api/pull", {"model": 3}, "model"),
]


@pytest.mark.parametrize("path, body, says", MALFORMED)
def test_malformed_bodies_are_4xx_in_ollamas_shape(run, path: str, body: Any, says: str) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            # curl -d sends a form content type: the body is JSON all the same, as Ollama reads it
            r = await c.post(path, content=content, headers={"content-type": "application/x-www-form-urlencoded"})
            assert_error(r, 400, contains=says)
    run(go())


def test_unknown_model_is_ollamas_404(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            for path, body in (("/api/chat", chat(model="llama3")), ("/api/generate", gen(model="llama3")),
                               ("/api/embed", {"model": "llama3", "input": "x"})):
                assert_error(await c.post(path, json=body), 404, contains='model "llama3" not found, try pulling it')
    run(go())


def test_the_openapi_document_lists_the_routes_with_their_bodies(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            paths = (await c.get("/openapi.json")).json()["paths"]
            for path in ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show", "/api/pull"):
                schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
                assert "$defs" not in json.dumps(schema)
            assert "get" in paths["/api/tags"] and "get" in paths["/api/ps"] and "get" in paths["/"]
    run(go())


def test_other_methods_and_oversized_bodies_answer_in_ollamas_shape(run) -> None:
    async def go() -> None:
        async with serve_fake(api_keys=("k",), max_body_bytes=1000) as c:
            for method, path, allow in (("GET", "/api/chat", "POST"), ("PUT", "/api/pull", "POST"),
                                        ("DELETE", "/", "GET, HEAD"), ("POST", "/api/tags", "GET, HEAD")):
                r = await c.request(method, path)  # no key needed to learn the method is wrong
                assert_error(r, 405, contains="method not allowed")
                assert r.headers["allow"] == allow
            r = await c.post("/api/chat", content=b"x" * 2000, headers={"authorization": "Bearer k"})
            assert_error(r, 413, contains="larger than 1000 bytes")
    run(go())


def test_remote_models_are_not_offered_to_ollama_clients(run) -> None:
    async def go() -> None:
        models = ({"name": "fake-model", "source": "fake-model", "load": "preload"},
                  {"name": "big", "urls": ["http://127.0.0.1:9/v1"]})  # forwarded by /v1 only
        async with serve_fake(models=models) as c:
            assert "big:latest" not in {m["model"] for m in (await c.get("/api/tags")).json()["models"]}
            assert "big:latest" not in {m["model"] for m in (await c.get("/api/ps")).json()["models"]}
    run(go())
