"""A mixed-load soak of the real server and model (slow: `pytest -m slow`).

Twelve clients for BOTFRAMEWORK_SOAK_S seconds (90 by default), each picking at random: whole and
streamed chat and completions (the official `openai` client and raw sockets), streams the client
leaves after a few chunks, streams cancelled through /v1/cancel, n=2 with logprobs, JSON-schema
output, session turns, embeddings, tokenize, and malformed requests. Then: no 5xx seen, every
stream read to its end closed with [DONE], every slot free again, /health ok, and the process
alive. More sequences than slots, so requests also queue.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

openai = pytest.importorskip("openai")

from server_proc import served  # noqa: E402

from botframework.runtime.catalog import DEFAULT_MODEL  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = DEFAULT_MODEL
SOAK_S = float(os.environ.get("BOTFRAMEWORK_SOAK_S", "90"))
CLIENTS = 12


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with served(["--parallel", "4", "--ctx-size", "4096", "--log-level", "warning"]) as (url, proc):
        yield url
        assert proc.poll() is None, "the server died under load"


class Soak:
    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=120)
        self.http = httpx.Client(base_url=base_url, timeout=120)
        self.lock = threading.Lock()
        self.done: Counter[str] = Counter()
        self.failures: list[str] = []

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def _post(self, what: str, path: str, body: dict | None = None) -> httpx.Response:  # type: ignore[type-arg]
        """POST; a 5xx is recorded as a failure."""
        r = self.http.post(path, json=body)
        if r.status_code >= 500:
            self._fail(f"{what}: {r.status_code} {r.text[:200]}")
        return r

    def _sse(self, path: str, body: dict, leave_after: int | None = None,  # type: ignore[type-arg]
             on_first: Callable[[dict], None] | None = None) -> None:  # type: ignore[type-arg]
        with self.http.stream("POST", path, json={**body, "stream": True}) as r:
            if r.status_code >= 500:
                self._fail(f"{path}: {r.status_code}")
                return
            if r.status_code != 200:
                return  # a 4xx (429 busy under load) is an answer
            events = 0
            last = ""
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                last = line
                if line == "data: [DONE]":
                    break
                event = json.loads(line[6:])
                if "error" in event and event["error"].get("type") == "server_error":
                    self._fail(f"{path}: error event {event}")
                events += 1
                if events == 1 and on_first is not None:
                    on_first(event)
                if leave_after is not None and events >= leave_after:
                    return  # closing the response mid-stream: the server must notice and free the slot
            if last != "data: [DONE]":
                self._fail(f"{path}: the stream ended without [DONE] (last {last!r})")

    def chat(self) -> None:
        r = self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Name a color. {random.random()}"}],
            max_tokens=random.randint(1, 24))
        assert r.choices[0].finish_reason in ("stop", "length")

    def chat_stream(self) -> None:
        text = "".join(c.choices[0].delta.content or "" for c in self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=24, stream=True,
            stream_options={"include_usage": True}) if c.choices)
        assert isinstance(text, str)

    def completion_stream(self) -> None:
        self._sse("/v1/completions", {"model": MODEL, "prompt": "Once upon a time,", "max_tokens": 32})

    def leave_mid_stream(self) -> None:
        self._sse("/v1/completions", {"model": MODEL, "prompt": "A long story:", "max_tokens": 200,
                                      "ignore_eos": True}, leave_after=random.randint(1, 6))

    def cancel_mid_stream(self) -> None:
        def cancel(event: dict) -> None:  # type: ignore[type-arg]
            self._post("cancel", f"/v1/cancel/{event['id']}")
        self._sse("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Go on."}],
                                           "max_tokens": 200, "ignore_eos": True}, on_first=cancel)

    def n_logprobs(self) -> None:
        self._sse("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                           "max_tokens": 8, "n": 2, "logprobs": True, "top_logprobs": 2})

    def json_schema(self) -> None:
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                   "age": {"type": "integer"}},
                  "required": ["name", "age"], "additionalProperties": False}
        r = self._post("json_schema", "/v1/chat/completions", {
            "model": MODEL, "messages": [{"role": "user", "content": "A person as JSON."}], "max_tokens": 64,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}})
        if r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop":
            value = json.loads(r.json()["choices"][0]["message"]["content"])
            assert set(value) == {"name", "age"}

    def session(self) -> None:
        sid = f"soak-{random.randint(0, 5)}"  # a few sessions shared by the clients: turns race
        self._post("session", "/v1/chat/completions", {
            "model": MODEL, "session_id": sid, "max_tokens": 8,
            "messages": [{"role": "user", "content": f"Turn {random.randint(0, 99)}"}]})

    def embeddings(self) -> None:
        self._post("embeddings", "/v1/embeddings", {"model": MODEL, "input": ["a cat", "a dog sat"]})

    def tokenize(self) -> None:
        self._post("tokenize", "/tokenize", {"content": "Hello there"})

    def malformed(self) -> None:
        bodies = [{"model": MODEL, "messages": []}, {"model": MODEL, "prompt": [10**9]},
                  {"model": MODEL, "prompt": "x", "max_tokens": -1}, {"model": "nope", "prompt": "x"},
                  {"model": MODEL, "messages": [{"role": "user", "content": 3}]}]
        body = random.choice(bodies)
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        r = self.http.post(path, json=body)
        if not 400 <= r.status_code < 500:
            self._fail(f"malformed {body}: {r.status_code}")

    def run(self, seconds: float) -> None:
        actions = [self.chat, self.chat_stream, self.completion_stream, self.leave_mid_stream,
                   self.cancel_mid_stream, self.n_logprobs, self.json_schema, self.session, self.embeddings,
                   self.tokenize, self.malformed]
        deadline = time.monotonic() + seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                action = rng.choice(actions)
                try:
                    action()
                except openai.APIStatusError as exc:
                    if exc.status_code >= 500:
                        self._fail(f"{action.__name__}: {exc.status_code} {exc.message}")
                except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                    self._fail(f"{action.__name__}: {type(exc).__name__}: {exc}")
                with self.lock:
                    self.done[action.__name__] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def test_mixed_load_leaves_the_server_clean(base_url: str) -> None:
    soak = Soak(base_url)
    soak.run(SOAK_S)
    print("soak actions:", dict(soak.done))
    assert not soak.failures, soak.failures[:10]
    assert len(soak.done) == 11 and sum(soak.done.values()) > 100  # every kind ran
    deadline = time.monotonic() + 15
    while True:
        stats = httpx.get(f"{base_url}/v1/stats", timeout=10).json()
        if stats["num_busy_slots"] == 0 and stats["num_running"] == 0 and stats["num_waiting"] == 0:
            break
        assert time.monotonic() < deadline, f"slots still busy after the load: {stats}"
        time.sleep(0.2)
    assert httpx.get(f"{base_url}/health", timeout=5).json()["status"] == "ok"
    # and it still answers right
    r = soak.client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0)
    assert r.choices[0].text
