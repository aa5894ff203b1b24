"""Graceful drain: SIGTERM (or SIGINT) ends the server without losing what it accepted.

    first signal -> app.state.draining: new requests get 503 + Retry-After (DrainGate), /health
                    says "draining" with 503; requests in flight go on
                 -> drain(): wait until no model has a request in flight, at most
                    shutdown_grace_s; then end the rest with ShuttingDownError (a stream gets a
                    final chunk with its finish_reason, an error event and [DONE]; a request not
                    answered yet gets a 503 JSON error); save every chat session (sessions_dir)
                 -> uvicorn's own shutdown (connections are idle by then), exit 0
    second signal -> exit now (os._exit: uvicorn's force_exit would cancel every task and log
                     a traceback for each; the process ends the engine threads with it)

Why not uvicorn's timeout_graceful_shutdown alone: it waits for connections, not requests, and
when it runs out it cancels the route tasks, which ends streams without an end event and turns
answers into 500s with tracebacks in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from botframework.errors import ShuttingDownError
from botframework.server.limits import protocol_error
from botframework.server.systemd import SystemdNotifier

log = logging.getLogger("botframework.server")

END_WAIT_S = 10.0  # after the grace period: how long the ended requests may take to send their last bytes
RETRY_AFTER_S = 5


class DrainGate:
    """Outermost ASGI layer: while draining, every new HTTP request but /health gets a 503."""

    def __init__(self, app: ASGIApp, outer: Any) -> None:
        self.app = app
        self.outer = outer  # the FastAPI app (its state says whether it drains)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and getattr(self.outer.state, "draining", False) and scope["path"] != "/health":
            response = protocol_error(
                scope["path"], 503, "The server is shutting down; retry on another instance or after it restarts",
                type="service_unavailable", code="server_shutting_down", anthropic_type="overloaded_error",
                headers={"retry-after": str(RETRY_AFTER_S), "connection": "close"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def drain(app: Any, grace_s: float) -> None:
    """Let requests in flight finish within the grace period, end the rest, save sessions."""
    registry = app.state.registry
    if registry is None:  # still starting: nothing was accepted yet
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    if registry.num_in_flight:
        log.info("draining: %d requests in flight, up to %.0f s", registry.num_in_flight, grace_s)
    while registry.num_in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if registry.num_in_flight:
        error = ShuttingDownError(f"the server is shutting down: the request did not finish within the "
                                  f"{grace_s:g} s grace period")
        ended = 0
        for _name, handle in registry.loaded():
            end_all = getattr(handle, "end_all", None)
            if end_all is not None:
                ended += await asyncio.to_thread(end_all, error)
        log.info("draining: ended %d requests still running after %.0f s", ended, grace_s)
        deadline = loop.time() + END_WAIT_S
        while registry.num_in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
    saved = await registry.save_sessions()
    if saved:
        log.info("draining: %d chat sessions saved", saved)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with drain() between the first signal and uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, app: Any, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.drain_task: asyncio.Task[None] | None = None
        self.draining = False
        self.notifier = SystemdNotifier.from_env()  # READY, STOPPING, WATCHDOG under systemd; else nothing
        self.watchdog_task: asyncio.Future[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:  # models preloaded, port listening
            self.notifier.ready(f"serving on {self.config.host}:{self.config.port}")
            self.watchdog_task = asyncio.ensure_future(self.notifier.watchdog_forever())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.watchdog_task is not None:
            self.watchdog_task.cancel()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or self.should_exit:  # a second signal: now, without cancelling every task
            log.warning("%s again: stopping now, without the drain", signal.Signals(sig).name)
            for handler in logging.getLogger().handlers + logging.getLogger("uvicorn").handlers:
                handler.flush()
            os._exit(128 + sig)
        self.draining = True
        self.app.state.draining = True
        log.info("%s: draining (a second signal stops at once)", signal.Signals(sig).name)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        # systemd waits for the drain (its stop timeout extended to cover it)
        self.notifier.stopping("draining", timeout_s=self.grace_s + END_WAIT_S + 5)
        self.drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await drain(self.app, self.grace_s)
        except Exception:  # noqa: BLE001 - never keep a stopping server up
            log.exception("draining failed; stopping anyway")
        finally:
            self.should_exit = True
