"""The real server (uvicorn subprocess, real model, real socket) driven by the official `openai` client.

Differential checks: streamed == non-streamed at temperature 0; streamed token count == usage;
a client that disconnects mid-stream frees its KV slot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from server_proc import free_port, metric, pulled

from botframework.runtime.catalog import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
API_KEY = "e2e-test-key"
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    pulled(MODEL)
    port = free_port()
    env = dict(os.environ)  # the installed package (the source tree has no compiled module)
    proc = subprocess.Popen(
        [sys.executable, "-m", "botframework.server", "--port", str(port), "--model", MODEL, "--parallel", "2",
         "--ctx-size", "2048", "--api-key", API_KEY, "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=tempfile.gettempdir())  # not the checkout: `-m` puts the cwd first on sys.path, shadowing the install
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"server exited with {proc.returncode}:\n{out}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not become healthy in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(base_url: str):  # type: ignore[no-untyped-def]
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


def _stats(base_url: str) -> dict[str, int]:
    r = httpx.get(f"{base_url}/v1/stats", headers={"authorization": f"Bearer {API_KEY}"}, timeout=10)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def test_health_and_models(base_url: str, client) -> None:  # type: ignore[no-untyped-def]
    health = httpx.get(f"{base_url}/health", timeout=5)  # open without a key
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_sync(client) -> None:  # type: ignore[no-untyped-def]
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 0


def test_chat_async(base_url: str) -> None:
    async def go() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0) as c:
            results = await asyncio.gather(*[
                c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                          max_tokens=8, temperature=0)
                for q in ("Say hello.", "Count to three.")])
            return [r.choices[0].message.content or "" for r in results]

    answers = asyncio.run(go())
    assert all(answers)


def test_streamed_equals_non_streamed(client) -> None:  # type: ignore[no-untyped-def]
    # warm: both answers below then read the prompt from the prefix cache (a cold prompt can
    # tip a greedy near-tie)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 logprobs=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # every generated token is reported once in the stream's logprobs
    num_streamed = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    assert num_streamed == chunks[-1].usage.completion_tokens


def test_completions(client) -> None:  # type: ignore[no-untyped-def]
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_bad_requests_are_openai_errors(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10**7)
    assert info.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, logit_bias={"999999999": 5})
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_n_choices_whole_streamed_and_cancelled_together(client, base_url: str) -> None:  # type: ignore[no-untyped-def]
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=6, temperature=0.9,
                                           seed=11, extra_body={"ignore_eos": True})
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.message.content for c in whole.choices)
    assert whole.usage.completion_tokens == 18

    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, max_tokens=6, temperature=0.9,
                                                seed=11, stream=True, stream_options={"include_usage": True},
                                                extra_body={"ignore_eos": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length"} and all(texts.values())
    assert usage is not None and usage.completion_tokens == 12

    headers = {"authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1500, "stream": True, "n": 2,
            "ignore_eos": True}
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: {"))
        response_id = json.loads(first[len("data: "):])["id"]
        cancelled = http.post(f"{base_url}/v1/cancel/{response_id}", headers=headers).json()
        assert cancelled["num_cancelled"] == 2
        assert [line for line in lines if line][-1] == "data: [DONE]"  # both choices end, then the stream
    _wait_for(base_url, "cancelled choices kept their slots", lambda s: s["num_busy_slots"] == 0)
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers) as r:
        lines = r.iter_lines()
        seen = 0
        while seen < 6:
            seen += next(lines).startswith("data: {")
        assert _stats(base_url)["num_running"] == 2
        r.close()  # the client leaves: both choices stop
    _wait_for(base_url, "choices kept running after the client went away", lambda s: s["num_busy_slots"] == 0)


def _endless_body(base_url: str) -> dict:  # type: ignore[type-arg]
    """A streamed completion that cannot end on its own: its end-of-generation tokens are
    banned, so it runs for minutes (1,500 tokens) unless it is stopped."""
    eog = httpx.post(f"{base_url}/tokenize", json={"content": "<|im_end|><|endoftext|>", "parse_special": True},
                     headers={"authorization": f"Bearer {API_KEY}"}, timeout=10).json()["tokens"]
    return {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1500, "stream": True,
            "logit_bias": {str(t): -100 for t in eog}}


def test_disconnect_mid_stream_frees_the_slot(base_url: str) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    body = _endless_body(base_url)
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep the iterator: closing it closes the connection
        seen = 0
        while seen < 3:
            seen += next(lines).startswith("data: {")
        assert _stats(base_url)["num_busy_slots"] == 1  # still generating while we are connected
        r.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while _stats(base_url)["num_busy_slots"] != 0:
        assert time.monotonic() < deadline, "the sequence kept running after the client went away"
        time.sleep(0.1)
    # the same for a non-streamed request whose client times out
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{base_url}/v1/completions", json={**body, "stream": False}, headers=headers, timeout=1.5)
    deadline = time.monotonic() + 10
    while _stats(base_url)["num_busy_slots"] != 0:
        assert time.monotonic() < deadline, "the non-streamed request kept running after the client went away"
        time.sleep(0.1)


def _wait_for(base_url: str, what: str, ok, timeout_s: float = 10.0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ok(stats := _stats(base_url)):
        assert time.monotonic() < deadline, f"{what}: {stats}"
        time.sleep(0.05)
    return stats


def _send_and_leave_open(base_url: str, body: dict) -> socket.socket:  # type: ignore[type-arg]
    """POST without waiting for anything: the server answers a stream only once its first token
    exists, so an HTTP client would block through the queue and the prefill."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def test_disconnect_during_prefill_and_while_queued_frees_everything(base_url: str) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    # ~1,700 prompt tokens: seconds of prefill on a small CPU, one chunk per step
    long_prompt = " ".join(f"item{i}" for i in range(450))
    assert 1200 < len(httpx.post(f"{base_url}/tokenize", json={"content": long_prompt}, headers=headers,
                                 timeout=10).json()["tokens"]) < 2000
    body = {"model": MODEL, "prompt": long_prompt, "max_tokens": 8, "stream": True}
    before = _stats(base_url)["num_generated_tokens"]
    sock = _send_and_leave_open(base_url, body)
    _wait_for(base_url, "the request never started its prefill", lambda s: s["num_prefilling"] == 1)
    sock.close()  # gone before its first token
    stats = _wait_for(base_url, "the prefilling sequence kept its slot after the client went away",
                      lambda s: s["num_busy_slots"] == 0)
    assert stats["num_prefilling"] == 0 and stats["num_running"] == 0
    assert stats["num_generated_tokens"] == before  # cancelled before it sampled anything

    # both slots busy with endless generations, a third request waits in the queue
    endless = _endless_body(base_url)
    a, b = _send_and_leave_open(base_url, endless), _send_and_leave_open(base_url, endless)
    _wait_for(base_url, "two generations did not start", lambda s: s["num_running"] == 2)
    queued = _send_and_leave_open(base_url, body)
    _wait_for(base_url, "the third request was not queued", lambda s: s["num_waiting"] == 1)
    queued.close()
    _wait_for(base_url, "the queued request stayed in the queue after its client went away",
              lambda s: s["num_waiting"] == 0)
    assert _stats(base_url)["num_running"] == 2  # the others go on
    a.close()
    b.close()
    stats = _wait_for(base_url, "slots stayed busy", lambda s: s["num_busy_slots"] == 0)
    assert stats["num_waiting"] == 0 and stats["num_running"] == 0
    assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200


def _metric(base_url: str, name: str) -> float:
    return metric(base_url, name, {"authorization": f"Bearer {API_KEY}"})


def _read_chunked(stream) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    """A chunked HTTP body, strictly: every size line, chunk and CRLF where it must be."""
    while True:
        size_line = stream.readline()
        assert size_line.endswith(b"\r\n"), size_line
        size = int(size_line, 16)
        data = stream.read(size) if size else b""
        assert len(data) == size and stream.read(2) == b"\r\n"
        if not size:
            return
        yield data


def _raw_stream(base_url: str, path: str, body: dict, *, rcvbuf: int = 0, wait_s: float = 0.0,  # type: ignore[type-arg]
                ) -> list[dict]:  # type: ignore[type-arg]
    """POST a streamed request on a raw socket (optionally a small receive buffer, and not
    reading for wait_s): the SSE events of the chunked body, checked strictly, as JSON."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.settimeout(120)
    sock.connect((host, int(port)))
    payload = json.dumps(body).encode()
    with sock, sock.makefile("rb") as stream:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(wait_s)
        assert stream.readline().startswith(b"HTTP/1.1 200")
        headers = []
        while (line := stream.readline()) != b"\r\n":
            headers.append(line.lower())
        assert b"transfer-encoding: chunked\r\n" in headers
        body_bytes = b"".join(_read_chunked(stream))
    events = body_bytes.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: {") for e in events[:-2])
    return [json.loads(e[len(b"data: "):]) for e in events[:-2]]


def test_streamed_tokens_go_out_from_the_engine_thread(base_url: str, client) -> None:  # type: ignore[no-untyped-def]
    """server/direct.py: a running stream's chunks are written by the engine thread, most of
    them by its native runs of steps; the client sees the same events, in order, as the
    non-streamed answer."""
    def direct() -> float:
        return _metric(base_url, "botframework_sse_direct_chunks_total") + native()

    def native() -> float:
        return _metric(base_url, "botframework_sse_direct_native_tokens_total")

    before, native_before = direct(), native()
    prompt = "The three primary colours are"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, temperature=0, extra_body={
        "ignore_eos": True})
    events = _raw_stream(base_url, "/v1/completions", {
        "model": MODEL, "prompt": prompt, "max_tokens": 32, "temperature": 0, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}})
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == whole.choices[0].text
    assert [list(e) for e in events[:-1]] == [["id", "object", "created", "model", "system_fingerprint", "choices",
                                               "usage"]] * (len(events) - 1)
    assert len({e["id"] for e in events}) == 1 and events[-1]["usage"]["completion_tokens"] == 32
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert native() > native_before  # (its steady tokens went out from runs of steps)
    chat = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0,
                                               stream=True))
    whole_chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chat) == whole_chat.choices[0].message.content
    # the first token goes out with the headers and the last with finish_reason; those between
    # directly, but for one now and then that the engine published before the route re-armed
    # (a busy machine): at least half
    assert direct() - before >= (32 + len(chat)) // 2


def test_native_runs_stream_the_text_of_the_whole_answer(base_url: str, client) -> None:  # type: ignore[no-untyped-def]
    """Streams whose steady tokens a native run of steps sends to the socket itself: the same
    text as the whole answer (each read from the prefix cache, warmed first): a chat, a stop
    string met mid-answer, text with non-ASCII characters (each of those goes the usual way),
    a chat's whitespace held back; and four streams at once, each complete and well framed."""
    def native() -> float:
        return _metric(base_url, "botframework_sse_direct_native_tokens_total")

    cases = [("/v1/chat/completions", {"messages": [{"role": "user", "content": "Write a Python function that "
                                                                                 "adds two numbers."}],
                                       "max_tokens": 96}),
             ("/v1/completions", {"prompt": "Count: 1, 2, 3,", "max_tokens": 60, "stop": ["11"]}),
             ("/v1/completions", {"prompt": "French words: café, crème, brûlée, naïve, résumé, déjà vu,",
                                  "max_tokens": 48, "ignore_eos": True})]
    for path, options in cases:
        body = {"model": MODEL, "temperature": 0, **options}
        _raw_stream(base_url, path, {**body, "stream": True})  # the prompt into the prefix cache
        whole = httpx.post(f"{base_url}{path}", json=body, headers={"authorization": f"Bearer {API_KEY}"},
                           timeout=60).json()["choices"][0]
        before = native()
        events = _raw_stream(base_url, path, {**body, "stream": True})
        pieces = [(e["choices"][0].get("delta") or {}).get("content") or e["choices"][0].get("text") or ""
                  for e in events if e["choices"]]
        assert "".join(pieces) == (whole["message"]["content"] if "message" in whole else whole["text"]), path
        _eventually(lambda b=before: native() > b, f"{path} {options}")  # (counted as the route closes the stream)
    assert whole["text"].isascii() is False and whole["finish_reason"] == "length"

    before = native()
    body = {"model": MODEL, "max_tokens": 40, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = list(pool.map(lambda i: _raw_stream(base_url, "/v1/completions", {**body, "prompt": f"Story {i}:"}),
                                range(4)))
    for events in streams:
        assert events[-1]["usage"]["completion_tokens"] == 40 and len({e["id"] for e in events}) == 1
        assert len("".join(e["choices"][0]["text"] for e in events if e["choices"])) >= 20
    _eventually(lambda b=before: native() > b, "four streams")


def _eventually(check, what: str, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_whole_answers_run_several_steps_per_native_call(base_url: str, client) -> None:  # type: ignore[no-untyped-def]
    """A non-streamed answer runs its steady steps in native runs (Engine.run_steps, counted in
    /metrics); its text is the streamed answer's (both read the prompt from the prefix cache)."""
    before = _metric(base_url, "botframework_engine_runs_total")
    options = {"model": MODEL, "prompt": "Some animals that live in the sea:", "max_tokens": 48, "temperature": 0,
               "extra_body": {"ignore_eos": True}}
    client.completions.create(**options)
    assert _metric(base_url, "botframework_engine_runs_total") > before
    whole = client.completions.create(**options)
    streamed = "".join(c.choices[0].text for c in client.completions.create(**options, stream=True) if c.choices)
    assert streamed == whole.choices[0].text and whole.usage.completion_tokens == 48


def test_a_slow_reader_gets_every_streamed_byte_in_order(base_url: str, client) -> None:  # type: ignore[no-untyped-def]
    """A client with a small receive window that does not read while ~60 KB of events are
    generated, then reads them all: the stream arrives complete and in order, and the slot is
    free after it. (Whether the kernel's buffers took every write whole depends on its send
    buffer tuning; tests/server/test_direct.py forces the writes that are not taken whole.)"""
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 300, "temperature": 0}
    whole = client.completions.create(**body, extra_body={"ignore_eos": True})
    events = _raw_stream(base_url, "/v1/completions", {**body, "ignore_eos": True, "stream": True, "stream_options": {
        "include_usage": True}}, rcvbuf=4096, wait_s=3.0)
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == whole.choices[0].text
    assert events[-1]["usage"]["completion_tokens"] == 300
    _wait_for(base_url, "the slow reader's slot stayed busy", lambda s: s["num_busy_slots"] == 0)


def test_metrics(base_url: str) -> None:
    text = httpx.get(f"{base_url}/metrics", headers={"authorization": f"Bearer {API_KEY}"}, timeout=10).text
    assert "botframework_generated_tokens_total" in text
    assert "botframework_time_to_first_token_seconds_count" in text
    assert f'botframework_queue_depth{{model="{MODEL}"}} 0.0' in text  # one series per model
    assert f'botframework_model_loaded{{model="{MODEL}"}} 1.0' in text
