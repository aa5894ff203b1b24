"""The HTTP layer on a fake runtime: shapes, errors, auth, limits. No model, no sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.errors import BusyError, ModelLoadError, StateRestoreError
from botframework.server.settings import ServerSettings

CHAT = "/v1/chat/completions"


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}


def assert_error(resp: httpx.Response, status: int, *, param: str | None = None, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err


def sse_events(text: str) -> list[Any]:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def test_chat_non_streaming_shape(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(CHAT, json=chat_body(temperature=0))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "chat.completion" and body["model"] == "fake-model"
            choice = body["choices"][0]
            assert choice["message"] == {"role": "assistant", "content": "Hello from the fake model.", "refusal": None}
            assert choice["finish_reason"] == "stop"
            assert body["usage"]["completion_tokens"] == len("Hello from the fake model.")
    run(go())


def test_chat_stream_events_follow_openai(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(CHAT, json=chat_body(stream=True, max_tokens=5, stream_options={"include_usage": True}))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.text)
            assert events[-1] == "[DONE]"
            assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2])
            assert content == "Hello"
            assert events[-3]["choices"][0]["finish_reason"] == "length"
            assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 5
    run(go())


def test_completions_and_stream(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post("/v1/completions", json={"model": "fake-model", "prompt": "Once", "max_tokens": 3,
                                                      "logprobs": 1})
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["text"] == "Hel" and choice["finish_reason"] == "length"
            assert len(choice["logprobs"]["tokens"]) == 3
            r = await c.post("/v1/completions", json={"model": "fake-model", "prompt": "Once", "stream": True})
            events = sse_events(r.text)
            assert events[-1] == "[DONE]"
            assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "Hello from the fake model."
    run(go())


def test_n_choices_whole_and_streamed(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(CHAT, json=chat_body(n=3, max_tokens=5, seed=7))
            body = r.json()
            assert [ch["index"] for ch in body["choices"]] == [0, 1, 2]
            assert all(ch["message"]["content"] == "Hello" for ch in body["choices"])
            assert body["usage"]["completion_tokens"] == 15 and body["usage"]["prompt_tokens"] > 0
            r = await c.post(CHAT, json=chat_body(n=2, max_tokens=5, stream=True,
                                                  stream_options={"include_usage": True}))
            events = sse_events(r.text)
            assert events[-1] == "[DONE]" and events[-2]["choices"] == []
            assert events[-2]["usage"]["completion_tokens"] == 10
            for index in (0, 1):
                mine = [e["choices"][0] for e in events[:-2] if e["choices"][0]["index"] == index]
                assert mine[0]["delta"] == {"role": "assistant", "content": ""}
                assert "".join(ch["delta"].get("content", "") for ch in mine) == "Hello"
                assert [ch["finish_reason"] for ch in mine][-1] == "length"
            r = await c.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "n": 2, "max_tokens": 3})
            assert [ch["text"] for ch in r.json()["choices"]] == ["Hel", "Hel"]
            r = await c.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "n": 2, "max_tokens": 3,
                                                      "stream": True})
            events = sse_events(r.text)
            for index in (0, 1):
                assert "".join(e["choices"][0]["text"] for e in events[:-1]
                               if e["choices"][0]["index"] == index) == "Hel"
    run(go())


def test_n_choices_get_their_own_request_ids_and_seeds(run) -> None:
    async def go() -> None:
        runtime = FakeRuntime()
        async with serve_fake(runtime) as c:
            r = await c.post(CHAT, json=chat_body(n=3, max_tokens=2, seed=7))
            rid = r.json()["id"]
            assert [q.request_id for q in runtime.requests] == [rid, f"{rid}~1", f"{rid}~2"]
            assert [q.params.sampler.seed for q in runtime.requests] == [7, 8, 9]
    run(go())


def test_models_health_tokenize_embeddings_metrics(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            assert (await c.get("/health")).json()["status"] == "ok"
            models = (await c.get("/v1/models")).json()
            assert [m["id"] for m in models["data"]] == ["fake-model"]
            listed = (await c.post("/v1/models/list")).json()
            for card in (*listed["data"], *models["data"]):
                card["meta"].pop("idle_s")  # (the clock moved between the two)
            assert listed == models and models["data"][0]["meta"]["state"] == "loaded"
            assert (await c.get("/v1/models/fake-model")).json()["id"] == "fake-model"
            assert_error(await c.get("/v1/models/other"), 404, code="model_not_found")
            toks = (await c.post("/tokenize", json={"content": "ab"})).json()["tokens"]
            assert (await c.post("/detokenize", json={"tokens": toks})).json()["content"] == "ab"
            long = "xy" * 1500  # past INLINE_TOKENIZE_CHARS: both ways on a worker thread
            toks = (await c.post("/tokenize", json={"content": long, "add_special": False})).json()["tokens"]
            assert len(toks) == 3000
            assert (await c.post("/detokenize", json={"tokens": toks})).json()["content"] == long
            assert_error(await c.post("/detokenize", json={"tokens": [10**6]}), 400, param="tokens")
            emb = (await c.post("/v1/embeddings", json={"model": "fake-model", "input": ["a", "b"]})).json()
            assert len(emb["data"]) == 2 and len(emb["data"][0]["embedding"]) == 8
            await c.post(CHAT, json=chat_body())
            text = (await c.get("/metrics")).text
            assert "botframework_queue_depth" in text and "botframework_time_to_first_token_seconds_count 1.0" in text
    run(go())


MALFORMED: list[tuple[dict[str, Any], str | None]] = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    (chat_body(messages=[]), "messages"),
    (chat_body(messages="hi"), "messages"),
    (chat_body(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
    (chat_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), None),
    (chat_body(max_tokens=-1), "max_tokens"),
    (chat_body(max_tokens=0), "max_tokens"),
    (chat_body(max_tokens=10**9), "max_tokens"),
    (chat_body(max_tokens="ten"), "max_tokens"),
    (chat_body(temperature=-1), "temperature"),
    (chat_body(temperature="hot"), "temperature"),
    (chat_body(top_p=3), "top_p"),
    (chat_body(n=9), "n"),
    (chat_body(n=2, session_id="s"), "n"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat_body(stop=[""]), "stop"),
    (chat_body(logit_bias={"999999": 1}), "logit_bias"),
    (chat_body(logit_bias={"-1": 1}), "logit_bias"),
    (chat_body(logit_bias={"abc": 1}), "logit_bias"),
    (chat_body(logit_bias={"5": 500}), "logit_bias.5"),
    (chat_body(seed=2**40), "seed"),
    (chat_body(frobnicate=True), "frobnicate"),
    (chat_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "wizard"}}}]), "tools"),
    (chat_body(response_format={"type": "json_schema", "json_schema": {}}), "response_format"),
    (chat_body(top_logprobs=3), "top_logprobs"),
    (chat_body(priority="urgent"), "priority"),
    (chat_body(stream_options={"include_usage": True}), "stream_options"),
]


@pytest.mark.parametrize("body,param", MALFORMED)
def test_malformed_requests_are_400_naming_the_field(run, body: dict[str, Any], param: str | None) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            assert_error(await c.post(CHAT, json=body), 400, param=param)
            assert (await c.get("/health")).status_code == 200
    run(go())


def test_bad_bodies_never_500(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            for raw in (b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", json.dumps({"model": 1}).encode()):
                r = await c.post(CHAT, content=raw, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
            assert_error(await c.post(CHAT, json=chat_body(model="gpt-4")), 404, code="model_not_found")
            assert_error(await c.post("/v1/completions", json={"model": "fake-model", "prompt": [5, 10**7]}), 400,
                         param="prompt")
            assert_error(await c.post("/v1/completions", json={"model": "fake-model", "prompt": ""}), 400)
            assert_error(await c.post("/v1/embeddings", json={"model": "fake-model", "input": []}), 400)
            assert (await c.get("/nope")).status_code == 404
            assert (await c.get("/health")).status_code == 200
    run(go())


def test_context_length_exceeded(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(n_ctx=16)) as c:
            r = await c.post(CHAT, json=chat_body(messages=[{"role": "user", "content": "x" * 100}]))
            assert_error(r, 400, code="context_length_exceeded", param="messages")
    run(go())


def test_busy_is_503_with_retry_after(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(submit_error=BusyError("busy", retry_after_s=2))) as c:
            r = await c.post(CHAT, json=chat_body(stream=True))
            assert_error(r, 503)
            assert r.headers["retry-after"] == "2"
    run(go())


def test_a_stored_state_that_would_not_load_is_503_with_retry_after(run) -> None:
    async def go() -> None:
        error = StateRestoreError("the stored cache could not be loaded back; retry", op="llama_state_seq_set_data")
        async with serve_fake(FakeRuntime(submit_error=error)) as c:
            r = await c.post(CHAT, json=chat_body())
            assert_error(r, 503, code="state_restore_failed")
            assert r.headers["retry-after"] == "1"
    run(go())


def test_engine_error_mid_stream_is_an_error_event(run) -> None:
    async def go() -> None:
        async with serve_fake(FakeRuntime(error_after=3)) as c:
            events = sse_events((await c.post(CHAT, json=chat_body(stream=True))).text)
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "engine_error"
            assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2]) == "Hel"
            assert_error(await c.post(CHAT, json=chat_body()), 500, code="engine_error")
            assert (await c.get("/health")).status_code == 200
    run(go())


def test_one_choice_failing_ends_the_stream_and_cancels_the_others(run) -> None:
    async def go() -> None:
        runtime = FakeRuntime(error_after=3, error_suffix="~1", token_delay_s=0.01)
        async with serve_fake(runtime) as c:
            events = sse_events((await c.post(CHAT, json=chat_body(stream=True, n=2))).text)
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "engine_error"
            assert all("error" not in e for e in events[:-2])  # one error event, nothing after it
            first = events[0]["id"]
            assert runtime.cancelled == [first] and not runtime.active  # choice 0 stopped with it
    run(go())


def test_failed_model_load_keeps_server_up(run) -> None:
    async def go() -> None:
        async with serve_fake(fail=ModelLoadError("not a gguf")) as c:
            h = await c.get("/health")
            assert h.status_code == 503 and h.json()["status"] == "degraded" and "not a gguf" in h.json()["error"]
            assert_error(await c.post(CHAT, json=chat_body()), 503, code="model_unavailable")
            listed = (await c.get("/v1/models")).json()["data"]  # declared models are listed with their state
            assert [(m["id"], m["meta"]["state"]) for m in listed] == [("fake-model", "failed")]
            assert "not a gguf" in listed[0]["meta"]["error"]
            assert 'botframework_model_loaded{model="fake-model"} 0.0' in (await c.get("/metrics")).text
    run(go())


def test_auth(run) -> None:
    async def go() -> None:
        async with serve_fake(api_keys=("k1", "secret-2")) as c:
            assert (await c.get("/health")).status_code == 200
            assert_error(await c.get("/v1/models"), 401, code="invalid_api_key")
            assert_error(await c.post(CHAT, json=chat_body(), headers={"authorization": "Bearer nope"}), 401)
            assert_error(await c.get("/metrics", headers={"authorization": "Basic k1"}), 401)
            ok = await c.get("/v1/models", headers={"authorization": "Bearer secret-2"})
            assert ok.status_code == 200
            assert (await c.get("/v1/models", headers={"x-api-key": "k1"})).status_code == 200
    run(go())


def test_body_limit_413(run) -> None:
    async def go() -> None:
        async with serve_fake(max_body_bytes=1000) as c:
            big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
            assert_error(await c.post(CHAT, json=big), 413, code="request_too_large")

            async def chunks():  # no Content-Length: the limit must count the streamed body
                for _ in range(10):
                    yield b" " * 500

            r = await c.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
            assert_error(r, 413)
            assert (await c.post(CHAT, json=chat_body())).status_code == 200
    run(go())


def test_cancel_endpoint(run) -> None:
    # ASGITransport buffers whole responses, so cancel a running non-streamed request by session.
    async def go() -> None:
        rt = FakeRuntime(token_delay_s=0.02, reply="x" * 500)
        async with serve_fake(rt) as c:
            pending = asyncio.create_task(c.post(CHAT, json=chat_body(session_id="s1")))
            while not rt.num_generated:
                await asyncio.sleep(0.01)
            assert (await c.post("/v1/cancel/s1")).json()["num_cancelled"] == 1
            r = await pending
            assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"
            assert len(r.json()["choices"][0]["message"]["content"]) < 500
            assert rt.cancelled == [rt.requests[-1].request_id] and not rt.active
            assert (await c.post("/v1/cancel/unknown")).json()["num_cancelled"] == 0
    run(go())


def test_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="API key"):
        ServerSettings(host="0.0.0.0").check_bind()
    ServerSettings(host="0.0.0.0", api_keys=("k",)).check_bind()
    ServerSettings(host="0.0.0.0", allow_non_loopback=True).check_bind()
    ServerSettings(host="::1").check_bind()
    s = ServerSettings.from_env({"BOTFRAMEWORK_PORT": "9000", "BOTFRAMEWORK_API_KEYS": "a, b",
                                 "BOTFRAMEWORK_ALLOW_NON_LOOPBACK": "yes"})
    assert (s.port, s.api_keys, s.allow_non_loopback) == (9000, ("a", "b"), True)
    assert s.hugepages and not ServerSettings.from_env({"BOTFRAMEWORK_HUGEPAGES": "off"}).hugepages
    config = tmp_path / "server.toml"
    config.write_text('hugepages = "off"\npull_missing = false\n')
    from_file = ServerSettings.from_env({}, config=config)
    assert from_file.hugepages is False and from_file.pull_missing is False
    config.write_text('hugepages = "sometimes"\n')
    with pytest.raises(ValueError, match="hugepages must be a boolean"):
        ServerSettings.from_env({}, config=config)
    assert s.replace(port=None, host="0.0.0.0").host == "0.0.0.0" and s.replace(port=None).port == 9000
    # repack: the server's, a [[models]] table's own, the environment's, --no-repack's
    config.write_text('repack = false\n[[models]]\nsource = "a"\nname = "a"\n'
                      '[[models]]\nsource = "b"\nname = "b"\nrepack = true\n')
    repacked = {entry.name: entry.config.repack for entry in ServerSettings.from_env({}, config=config).model_entries()}
    assert repacked == {"a": False, "b": True} and ServerSettings().worker_config().repack
    assert not ServerSettings.from_env({"BOTFRAMEWORK_REPACK": "0"}).worker_config().repack
    from botframework.cli import build_parser

    assert build_parser().parse_args(["serve", "--no-repack"]).repack is False
    assert build_parser().parse_args(["serve"]).repack is None  # (the settings' own then)
    with pytest.raises(ValueError):
        ServerSettings.from_env({"BOTFRAMEWORK_PORT": "http"})


def test_session_endpoints_create_inspect_delete(run) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        runtime = FakeRuntime()
        async with serve_fake(runtime) as client:
            created = (await client.post("/v1/sessions")).json()
            sid = created["id"]
            assert created["state"] == "new"
            assert (await client.get(f"/v1/sessions/{sid}")).json()["state"] == "new"
            r = await client.post(CHAT, json=chat_body(session_id=sid))
            assert r.status_code == 200
            assert (await client.get(f"/v1/sessions/{sid}")).json()["state"] == "idle"
            assert (await client.delete(f"/v1/sessions/{sid}")).json()["deleted"] is True
            assert_error(await client.get(f"/v1/sessions/{sid}"), 404, code="session_not_found")
            assert_error(await client.delete("/v1/sessions/nope"), 404, code="session_not_found")

    run(go())


def test_fill_in_the_middle_via_suffix_and_infill(run) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        runtime = FakeRuntime()
        async with serve_fake(runtime) as client:
            r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": "def f(", "suffix": ")\n"})
            assert r.status_code == 200, r.text
            assert runtime.last_infill == ("def f(", ")\n", "")
            assert runtime.requests[-1].prompt_tokens[0] == 3  # starts with the FIM prefix token
            r = await client.post("/infill", json={"input_prefix": "x = ", "input_suffix": "\n",
                                                   "input_extra": [{"filename": "a.py", "text": "y = 1"}],
                                                   "max_tokens": 4})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["content"] and body["stop"] is True and body["tokens_predicted"] >= 1
            assert runtime.last_infill == ("x = ", "\n", "a.py\ny = 1\n")
            r = await client.post("/infill", json={"input_prefix": "x", "stream": True, "max_tokens": 3})
            events = sse_events(r.text)
            assert events[-1]["stop"] is True and all("content" in e for e in events)
            assert_error(await client.post("/v1/completions", json={"model": "fake-model", "prompt": [1, 2],
                                                                   "suffix": "x"}), 400, param="prompt")

    run(go())


def test_validation_errors_keep_their_params_and_codes(run) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with serve_fake() as c:
            assert_error(await c.post(CHAT, json=chat_body(max_completion_tokens=10**9)), 400,
                         param="max_completion_tokens", code="invalid_value")
            assert_error(await c.post(CHAT, json=chat_body(max_tokens=10**9)), 400, param="max_tokens",
                         code="invalid_value")
            assert_error(await c.post(CHAT, json=chat_body(n=9)), 400, param="n", code="invalid_value")
            assert_error(await c.post(CHAT, json=chat_body(stop=["a"] * 5)), 400, param="stop", code="invalid_value")
            assert_error(await c.post(CHAT, json=chat_body(stop="")), 400, param="stop", code="invalid_value")
            assert_error(await c.post(CHAT, json=chat_body(logit_bias={"abc": 1})), 400, param="logit_bias")
            assert_error(await c.post(CHAT, json=chat_body(stream_options={"include_usage": True})), 400,
                         param="stream_options", code="unsupported_parameter")
            assert_error(await c.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "echo": True}),
                         400, param="echo", code="unsupported_parameter")
            assert_error(await c.post("/v1/completions", json={"model": "fake-model", "prompt": [1, 10**6]}), 400,
                         param="prompt")
            assert_error(await c.post("/v1/embeddings", json={"model": "fake-model", "input": [""]}), 400,
                         param="input")
            assert_error(await c.post("/v1/embeddings", json={"model": "fake-model", "input": "x",
                                                              "dimensions": 9}), 400,  # the fake's are 8 long
                         param="dimensions")
    run(go())


def test_fastapi_telemetry_is_off_unless_a_provider_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from botframework.server import app as app_module

    assert app_module._telemetry_off_unless_configured() == {
        "telemetry": {"tracing": False, "metrics": False, "logs": False}}

    class TracerProvider:  # what an SDK (opentelemetry-instrument) would have set
        pass

    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    assert app_module._telemetry_off_unless_configured() == {}
    monkeypatch.undo()
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert app_module._telemetry_off_unless_configured() == {}


def test_a_request_may_run_inline_only_while_no_other_request_holds_a_model(run: Any) -> None:
    """submit(inline=True) (the worker then runs a one-token answer on the event loop when its
    engine is idle) only when this request is the one in flight: while a chat answer is being
    generated, another request goes to the engine thread; every generation route asks."""
    runtime = FakeRuntime(token_delay_s=0.02)

    async def go() -> None:
        async with serve_fake(runtime) as c:
            one = {"model": "fake-model", "max_tokens": 1}
            assert (await c.post("/v1/completions", json={**one, "prompt": "hi"})).status_code == 200
            assert (await c.post("/v1/chat/completions", json={
                **one, "messages": [{"role": "user", "content": "hi"}]})).status_code == 200
            assert runtime.inline == [True, True]
            chat = asyncio.create_task(c.post("/v1/chat/completions", json={
                "model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
            while not runtime.active:
                await asyncio.sleep(0.005)
            assert (await c.post("/v1/completions", json={**one, "prompt": "hi"})).status_code == 200
            assert (await chat).status_code == 200
            assert runtime.inline == [True, True, True, False]
            assert (await c.post("/api/generate", json={
                "model": "fake-model", "prompt": "hi", "stream": False, "options": {"num_predict": 1}})).status_code == 200
            assert runtime.inline[-1] is True
    run(go())


def test_every_protocol_says_whether_its_answer_is_awaited_whole(run: Any) -> None:
    """Request.stream is False exactly when the response is not streamed (the engine may then
    run several steps per native call): OpenAI chat, completions and infill, Anthropic
    messages, OpenAI responses, Ollama generate and chat."""
    runtime = FakeRuntime()
    hi = [{"role": "user", "content": "hi"}]
    routes: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/chat/completions", {"model": "fake-model", "messages": hi, "max_tokens": 4}, "stream"),
        ("/v1/completions", {"model": "fake-model", "prompt": "hi", "max_tokens": 4}, "stream"),
        ("/infill", {"model": "fake-model", "input_prefix": "a", "input_suffix": "b", "n_predict": 4}, "stream"),
        ("/v1/messages", {"model": "fake-model", "messages": hi, "max_tokens": 4}, "stream"),
        ("/v1/responses", {"model": "fake-model", "input": "hi", "max_output_tokens": 16}, "stream"),
        ("/api/generate", {"model": "fake-model", "prompt": "hi", "options": {"num_predict": 4}}, "stream"),
        ("/api/chat", {"model": "fake-model", "messages": hi, "options": {"num_predict": 4}}, "stream"),
    ]

    async def go() -> None:
        async with serve_fake(runtime) as c:
            for path, body, key in routes:
                for streamed in (False, True):
                    response = await c.post(path, json={**body, key: streamed})
                    assert response.status_code == 200, (path, streamed, response.text)
                    assert runtime.requests[-1].stream is streamed, (path, streamed)
    run(go())
