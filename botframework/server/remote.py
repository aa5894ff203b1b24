"""Models that other servers run: requests for them are forwarded, streams passed through.

    [[models]] name = "big", urls = ["http://gpu1:8000/v1", "http://gpu2:8000/v1"], api_key = ...
      -> the registry "loads" it as a RemoteBackend (no weights here; its replicas' health)
    POST /v1/chat/completions | /v1/completions | /v1/embeddings naming it
      -> RemoteRoutes (an ASGI layer before the app): the API key checked as everywhere, the
         model leased (so the drain waits for it), the body sent to the healthy replica with the
         fewest requests outstanding, `model` renamed to the remote's name, the remote's answer
         (status, body, SSE chunks) passed back as it comes
      -> a replica that refuses the connection, or answers 502/503/504, before a byte went back
         to the client: marked down and the request sent to the next one (nothing was
         generated for the client yet, so nothing is lost or doubled); after that, a failure
         ends the response
    a replica marked down is tried again after RETRY_DOWN_S, or sooner if every one is down;
    health probes (GET <url>/models) run every PROBE_S while the model is used
    any other route naming a remote model: 400 remote_model (tokenize, sessions, Ollama, ...)

Use a remote model for a machine with a GPU, a vLLM cluster or another botframework; use
llama.cpp's RPC backend instead to spread one model's layers over several machines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botframework.errors import BotframeworkError
from botframework.runtime.registry import RemoteSpec
from botframework.server import errors
from botframework.server.auth import api_key_ok

log = logging.getLogger("botframework.server")

FORWARDED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
RETRY_DOWN_S = 10.0
PROBE_S = 5.0
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date"}


@dataclass
class Replica:
    url: str                       # base URL, ending in /v1
    outstanding: int = 0
    down_since: float | None = None
    last_error: str | None = None

    def usable(self, now: float) -> bool:
        return self.down_since is None or now - self.down_since >= RETRY_DOWN_S


@dataclass
class RemoteBackend:
    """What the registry holds for a remote model: its replicas and their state."""

    spec: RemoteSpec
    name: str
    replicas: list[Replica] = field(default_factory=list)
    client: httpx.AsyncClient | None = None
    probing: asyncio.Task[None] | None = None
    kind: str = "remote"

    def __post_init__(self) -> None:
        self.replicas = [Replica(url.rstrip("/")) for url in self.spec.urls]

    def order(self) -> list[Replica]:
        """The replicas to try, best first: usable ones by fewest outstanding, then the rest."""
        now = time.monotonic()
        usable = sorted((r for r in self.replicas if r.usable(now)), key=lambda r: r.outstanding)
        return usable + [r for r in self.replicas if not r.usable(now)]

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            timeout = httpx.Timeout(self.spec.timeout_s, connect=min(5.0, self.spec.timeout_s))
            self.client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=32))
            self.probing = asyncio.ensure_future(self._probe_forever())
        return self.client

    def headers(self) -> dict[str, str]:
        out = {"content-type": "application/json"}
        if self.spec.api_key:
            out["authorization"] = f"Bearer {self.spec.api_key}"
        return out

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            await asyncio.gather(*(self._probe(r) for r in self.replicas), return_exceptions=True)

    async def _probe(self, replica: Replica) -> None:
        try:
            r = await self.http().get(f"{replica.url}/models", headers=self.headers(), timeout=2.0)
            ok = r.status_code == 200
            error = None if ok else f"health probe: HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"health probe: {type(exc).__name__}"
        if ok and replica.down_since is not None:
            log.info("remote model %r: replica %s is back", self.name, replica.url)
            replica.down_since, replica.last_error = None, None
        elif not ok and replica.down_since is None:
            log.warning("remote model %r: replica %s is down (%s)", self.name, replica.url, error)
            replica.down_since, replica.last_error = time.monotonic(), error

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"url": r.url, "healthy": r.down_since is None, "outstanding": r.outstanding,
                 "down_s": round(now - r.down_since, 1) if r.down_since is not None else None,
                 "error": r.last_error} for r in self.replicas]

    # what the routes that walk every loaded model ask (cancel, sessions, metrics): a remote
    # model runs nothing here, so it has nothing to say
    def cancel(self, request_or_session_id: str) -> int:
        return 0

    def session_info(self, session_id: str) -> dict[str, object] | None:
        return None

    def drop_session(self, session_id: str) -> bool:
        return False

    def stats(self) -> dict[str, int]:
        return {"num_outstanding": sum(r.outstanding for r in self.replicas)}

    def worker_metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        if self.probing is not None:
            self.probing.cancel()
        if self.client is not None:  # closed by its loop's garbage collection otherwise
            client, self.client = self.client, None
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop here (the registry closes models in a thread)
                pass


class RemoteRoutes:
    """ASGI layer: requests for remote models go to their replicas; the rest to the app."""

    def __init__(self, app: ASGIApp, outer: Any, remote_names: Iterable[str]) -> None:
        self.app = app
        self.outer = outer
        self.remote_names = set(remote_names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in FORWARDED:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive, self.outer.state.settings.max_body_bytes)
        model = _model_of(body) if not more else None
        if model not in self.remote_names:
            await self.app(scope, _replay(body, more, receive), send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not api_key_ok(self.outer.state.settings.api_keys, headers):
            await _error(send, errors.APIError(401, "Incorrect or missing API key. Send it as 'Authorization: "
                                                    "Bearer <key>'.", type="authentication_error",
                                               code="invalid_api_key"))
            return
        registry = self.outer.state.registry
        try:
            lease = await registry.acquire(model)
        except (BotframeworkError, errors.APIError) as exc:
            await _error(send, errors.to_api_error(exc))
            return
        try:
            await self._forward(lease.handle, scope, body, receive, send)
        finally:
            lease.release()

    async def _forward(self, backend: RemoteBackend, scope: Scope, body: bytes, receive: Receive,
                       send: Send) -> None:
        payload = json.loads(body)
        payload["model"] = backend.spec.model or payload["model"]
        content = json.dumps(payload).encode()
        path = scope["path"][len("/v1"):]
        last: str = "no replica"
        for replica in backend.order():
            replica.outstanding += 1
            try:
                request = backend.http().build_request("POST", replica.url + path, content=content,
                                                       headers=backend.headers())
                try:
                    response = await backend.http().send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                    last = f"{replica.url}: {type(exc).__name__}"
                    _mark_down(backend, replica, last)
                    continue
                if response.status_code in (502, 503, 504) and len(backend.replicas) > 1:
                    await response.aclose()  # refused before it started: another replica may take it
                    last = f"{replica.url}: HTTP {response.status_code}"
                    _mark_down(backend, replica, last)
                    continue
                await _pass_through(response, receive, send)
                return
            finally:
                replica.outstanding -= 1
        await _error(send, errors.APIError(503, f"remote model '{backend.name}' has no replica that answers "
                                                f"({last})", type="service_unavailable", code="remote_unavailable",
                                           headers={"Retry-After": str(int(RETRY_DOWN_S))}))


def _mark_down(backend: RemoteBackend, replica: Replica, error: str) -> None:
    if replica.down_since is None:
        log.warning("remote model %r: replica %s is down (%s)", backend.name, replica.url, error)
    replica.down_since, replica.last_error = time.monotonic(), error


async def _pass_through(response: httpx.Response, receive: Receive, send: Send) -> None:
    """The remote's answer as it comes; a client that goes away closes the upstream request
    (which cancels the generation there)."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]

    async def relay() -> None:
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:  # the replica died mid-answer: end the body; the client sees it cut
            log.warning("remote answer broke off: %s", exc)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    relaying = asyncio.ensure_future(relay())
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({relaying, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relaying, watching):
            task.cancel()
        await asyncio.gather(relaying, watching, return_exceptions=True)
        await response.aclose()


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, list[Message]]:
    """The body if it is whole within `limit`; else what was read, and the messages to replay."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body", False):
            return b"".join(chunks), []
        if size > limit:  # the app's own limit answers it
            return b"".join(chunks), [{"type": "http.request", "body": b"", "more_body": True}]


def _model_of(body: bytes) -> str | None:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def _replay(body: bytes, more: list[Message], receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then goes on as the original."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": bool(more)}]
    if more and more[0]["type"] != "http.request":
        pending = [{"type": "http.request", "body": body, "more_body": False}, *more]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _error(send: Send, err: errors.APIError) -> None:
    response = errors.error_response(err)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
