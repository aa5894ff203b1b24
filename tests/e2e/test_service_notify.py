"""The real server as systemd runs it, with a test socket standing in for systemd's.

    NOTIFY_SOCKET=<test socket> WATCHDOG_USEC=2000000 python -m botframework.server ... 2> log
      -> READY=1 once it serves (once), WATCHDOG=1 every second (half the interval) from then on,
         STOPPING=1 when SIGTERM starts the drain, exit code 0
      -> its log on a file, not a tty: no ANSI escapes, no traceback, the request's id on the
         access line (the client's x-request-id, else the response id), echoed as a header

One server run (a module fixture) records all of it; each test checks one part.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from server_proc import free_port, pulled, wait_healthy

from botframework.runtime.catalog import DEFAULT_MODEL

WATCHDOG_S = 2.0
WATCH_FOR_S = 4.0  # pings watched between READY and SIGTERM: about four at one a second
CLIENT_ID = "e2e-notify-1"


@dataclass
class Run:
    messages: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, datagram)
    healthy_at: float = 0.0
    sigterm_at: float = 0.0
    exit_code: int | None = None
    log: str = ""
    responses: list[httpx.Response] = field(default_factory=list)

    def times(self, message: str) -> list[float]:
        return [at for at, text in self.messages if message in text.split("\n")]


def _listen(sock: socket.socket, run: Run, stop: threading.Event) -> None:
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        run.messages.append((time.monotonic(), data.decode()))


def _chat(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=headers or {}, timeout=120, json={
        "model": DEFAULT_MODEL, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]})


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    pulled(DEFAULT_MODEL)
    folder = tempfile.mkdtemp(prefix="sd")  # short: AF_UNIX paths are limited to 107 bytes
    notify = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    record = Run()
    stop = threading.Event()
    listener = threading.Thread(target=_listen, args=(sock, record, stop), daemon=True)
    listener.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(folder) / "stderr.log"
    env = {**os.environ, "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    env.pop("WATCHDOG_PID", None)
    with open(log_path, "wb") as log:
        # --log-level debug: uvicorn's access log is on; stderr a file, as under journald
        proc = subprocess.Popen(
            [sys.executable, "-m", "botframework.server", "--port", str(port), "--model", DEFAULT_MODEL,
             "--ctx-size", "1024", "--parallel", "1", "--log-level", "debug"],
            env=env, stdout=log, stderr=log,
            cwd=tempfile.gettempdir())  # not the checkout: `-m` puts the cwd first on sys.path, shadowing the install
    try:
        wait_healthy(url, proc, log=log_path)
        record.healthy_at = time.monotonic()
        record.responses = [_chat(url, {"x-request-id": CLIENT_ID}), _chat(url)]
        ready = record.times("READY=1")
        time.sleep(max(0.0, (ready[0] if ready else record.healthy_at) + WATCH_FOR_S - time.monotonic()))
        record.sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        record.exit_code = proc.wait(timeout=90)
        time.sleep(0.3)  # the last datagrams
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop.set()
        listener.join(5)
        sock.close()
        record.log = log_path.read_text(errors="replace")
        shutil.rmtree(folder)
    yield record


def test_ready_once_when_serving(run: Run) -> None:
    ready = run.times("READY=1")
    assert len(ready) == 1, run.messages
    # sent when the server serves: by the time /health answers, or right after
    assert ready[0] <= run.healthy_at + 2.0
    assert ready[0] < run.sigterm_at


def test_watchdog_pings_at_half_the_interval(run: Run) -> None:
    ready = run.times("READY=1")
    assert ready, run.messages
    pings = [at for at in run.times("WATCHDOG=1") if ready[0] - WATCHDOG_S / 2 <= at <= run.sigterm_at]
    assert len(pings) >= WATCH_FOR_S / (WATCHDOG_S / 2) - 1, run.messages
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    # every half interval: never late enough for systemd to see a missed ping, and not a flood
    assert max(gaps) < WATCHDOG_S * 0.8 and min(gaps) > WATCHDOG_S / 4, gaps


def test_stopping_on_sigterm_then_exit_0(run: Run) -> None:
    stopping = run.times("STOPPING=1")
    assert len(stopping) == 1 and run.sigterm_at <= stopping[0] <= run.sigterm_at + 2.0, run.messages
    assert not [at for at in run.times("READY=1") if at > stopping[0]]
    assert run.exit_code == 0, run.log[-3000:]


def test_log_is_plain_one_line_per_event_with_request_ids(run: Run) -> None:
    assert "\x1b[" not in run.log
    lines = run.log.splitlines()
    assert not [line for line in lines if line.startswith(("Traceback", "  File "))], run.log[-3000:]
    access = [line for line in lines if "uvicorn.access:" in line and "POST /v1/chat/completions" in line]
    assert len(access) == 2, run.log[-3000:]
    assert access[0].startswith(f"INFO uvicorn.access: [{CLIENT_ID}] 127.0.0.1:"), access
    response_id = run.responses[1].json()["id"]
    assert access[1].startswith(f"INFO uvicorn.access: [{response_id}] 127.0.0.1:"), access


def test_request_id_header(run: Run) -> None:
    given, plain = run.responses
    assert given.status_code == plain.status_code == 200
    assert given.headers["x-request-id"] == CLIENT_ID
    assert plain.headers["x-request-id"] == plain.json()["id"]  # the response id names the request
