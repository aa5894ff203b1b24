"""SIGTERM on the real server with streams in flight: every stream ends with its finish_reason
and [DONE] (all complete within a long grace; with a 1 s grace the rest end with a last chunk,
an error event and [DONE]), new requests get 503, the process exits 0 with no traceback; chat
sessions saved to sessions_dir come back after a restart (the next turn prefills only its new
tokens), and a corrupt or foreign session file is skipped."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from server_proc import free_port, wait_healthy

MODEL = "smollm2-135m-instruct"


class Server:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "botframework.server", "--port", str(self.port),
                                          "--model", MODEL, "--ctx-size", "4096", *args],
                                         cwd=tempfile.gettempdir(), stdout=out, stderr=subprocess.STDOUT)
        wait_healthy(self.url, self.proc, log=log)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def stream(url: str, max_tokens: int, started: concurrent.futures.Future[None] | None = None) -> list[Any]:
    """A chat stream's events (JSON or "[DONE]"), read to the end."""
    events: list[Any] = []
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append("[DONE]" if line[6:] == "[DONE]" else json.loads(line[6:]))
                if started is not None and not started.done() and len(events) > 2:
                    started.set_result(None)
    return events


def finish_reasons(events: list[Any]) -> list[str]:
    return [c["finish_reason"] for e in events if isinstance(e, dict) and "choices" in e
            for c in e["choices"] if c.get("finish_reason")]


def run_streams(server: Server, count: int, max_tokens: int) -> tuple[list[list[Any]], httpx.Response, int]:
    """`count` streams; SIGTERM once all are running; a new request meanwhile; the exit code."""
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        started = [concurrent.futures.Future() for _ in range(count)]  # type: ignore[var-annotated]
        futures = [pool.submit(stream, server.url, max_tokens, s) for s in started]
        concurrent.futures.wait(started, timeout=120)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        results = [f.result(timeout=120) for f in futures]
    return results, refused, server.proc.wait(timeout=120)


def test_sigterm_lets_every_stream_finish_within_the_grace(tmp_path: Path, model_path: Path) -> None:
    server = Server(["--parallel", "10", "--shutdown-grace", "60"], tmp_path / "log")
    results, refused, code = run_streams(server, 10, 200)
    assert code == 0
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    for events in results:
        assert events[-1] == "[DONE]" and finish_reasons(events) == ["length"]
        assert not any(isinstance(e, dict) and "error" in e for e in events)
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log and "draining" in log, log


def test_past_the_grace_streams_end_with_a_last_chunk_an_error_event_and_done(tmp_path: Path,
                                                                               model_path: Path) -> None:
    server = Server(["--parallel", "4", "--shutdown-grace", "1"], tmp_path / "log")
    results, _refused, code = run_streams(server, 4, 3000)
    assert code == 0
    for events in results:
        assert events[-1] == "[DONE]"
        assert finish_reasons(events) == ["length"]
        error = events[-2]
        assert error["error"]["code"] == "server_shutting_down", error
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_sessions_outlive_a_restart_and_bad_files_are_skipped(tmp_path: Path, model_path: Path) -> None:
    sessions = tmp_path / "sessions"
    args = ["--sessions-dir", str(sessions)]
    messages = [{"role": "user", "content": "My name is Ada and I write compilers. Remember it."}]

    def turn(url: str, msgs: list[dict[str, str]]) -> dict[str, Any]:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": msgs, "max_tokens": 8, "temperature": 0, "session_id": "ada"})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    first = Server(args, tmp_path / "log1")
    answer = turn(first.url, messages)
    assert first.stop() == 0
    files = list(sessions.glob("*.bfsession"))
    assert len(files) == 1
    # a corrupt file and one that claims to be another model's: skipped, with a warning
    (sessions / ("0" * 32 + ".bfsession")).write_bytes(b"BFSESSION1\n{not json")
    foreign = sessions / ("1" * 32 + ".bfsession")
    foreign.write_bytes(files[0].read_bytes().replace(b'"size":', b'"size":1', 1))

    second = Server(args, tmp_path / "log2")
    try:
        messages += [{"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
                     {"role": "user", "content": "What is my name?"}]
        usage = turn(second.url, messages)["usage"]
        prefix = answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] >= prefix - 2, usage  # only the new turn prefilled
    finally:
        assert second.stop() == 0
    log = (tmp_path / "log2").read_text()
    assert "skipping session file" in log and "Traceback" not in log, log


def test_a_second_signal_stops_at_once(tmp_path: Path, model_path: Path) -> None:
    """With a 600 s grace and a 4000-token stream running, SIGTERM then SIGINT: the process is
    gone before the stream could end (it breaks off), instead of draining."""
    server = Server(["--shutdown-grace", "600"], tmp_path / "log")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        running = pool.submit(stream, server.url, 4000, started)
        started.result(timeout=60)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # draining: the stream goes on
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(timeout=120)
        try:
            events = running.result(timeout=60)
        except httpx.HTTPError:
            events = None  # broken off
    assert events is None or finish_reasons(events) != ["length"], "the stream ran to its end"
    assert "Traceback" not in (tmp_path / "log").read_text()
