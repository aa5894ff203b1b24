"""Start the real server as a child process for the slow end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def pulled(model: str) -> None:
    """The catalog model in the cache, through our own pull; the test fails if it cannot be had."""
    import pytest

    from botframework.runtime.pull import resolve_model

    try:
        resolve_model(model, pull_missing=True)
    except Exception as exc:  # noqa: BLE001 - no network and no cache: nothing to serve
        pytest.fail(f"model {model} unavailable: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 180,
                 log: Path | None = None) -> None:
    """Until GET /health answers 200; fails if the process exits first (with its log, if any)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None:
            assert proc.poll() is None, "the server exited while starting" + (f":\n{log.read_text()}" if log else "")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not become healthy"
        time.sleep(0.1)


@contextmanager
def served(args: list[str], env: dict[str, str] | None = None, port: int | None = None,
           timeout_s: float = 180) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m botframework.server --port P *args` until /health answers; (base URL, process).
    Run from the temp dir, not the checkout: `-m` puts the cwd first on sys.path, shadowing the install."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "botframework.server", "--port", str(port), *args],
                            cwd=tempfile.gettempdir(), env={**os.environ, **(env or {})})
    try:
        wait_healthy(url, proc, timeout_s)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def metric(base_url: str, name: str, headers: dict[str, str] | None = None) -> float:
    """A counter's value on a running server's /metrics, summed over its labels."""
    text = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))  # (with its labels)
