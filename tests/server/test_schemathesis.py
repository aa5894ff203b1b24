"""The OpenAPI document is valid, and schemathesis-generated requests never get a 5xx.

The app runs on a real loopback socket (uvicorn in a thread) over the fake runtime, so the
HTTP layer is fuzzed without a model: validation, auth, limits and error mapping.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import schemathesis
import uvicorn
from fake_runtime import FakeRuntime
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from botframework.server.app import create_app
from botframework.server.settings import ServerSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PORT = _free_port()
_APP = create_app(ServerSettings(model="fake-model", port=_PORT), runtime_factory=lambda _s: FakeRuntime())


def _serve() -> None:
    server = uvicorn.Server(uvicorn.Config(_APP, host="127.0.0.1", port=_PORT, log_level="warning"))
    server.run()


threading.Thread(target=_serve, daemon=True).start()
for _ in range(200):
    try:
        if httpx.get(f"http://127.0.0.1:{_PORT}/health", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.05)

schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{_PORT}/openapi.json")


def test_openapi_document_is_valid() -> None:
    validate(httpx.get(f"http://127.0.0.1:{_PORT}/openapi.json").json())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(base_url=f"http://127.0.0.1:{_PORT}", timeout=10)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert error_shape_ok(case.path, response.json()), f"{case.method} {case.path}: {response.text[:300]}"


def error_shape_ok(path: str, payload: dict) -> bool:
    """Each protocol's errors in its own shape: Anthropic's, Ollama's, and OpenAI's for the rest."""
    if path.startswith("/v1/messages"):  # adapters/anthropic.py
        return payload.get("type") == "error" and set(payload["error"]) == {"type", "message"}
    if path.startswith("/api/") or path == "/":  # adapters/ollama.py
        return isinstance(payload.get("error"), str)
    return set(payload["error"]) == {"message", "type", "param", "code"}


@pytest.fixture(autouse=True)
def _alive() -> None:
    assert httpx.get(f"http://127.0.0.1:{_PORT}/health", timeout=5).status_code == 200
