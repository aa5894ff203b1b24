"""StreamWriteTimeout on fake sends: a body send that cannot complete for timeout_s drops the
connection (uvicorn's cycle known) or is abandoned with StreamStalledError; sends that complete
pass through untouched, and a streamed response gets bounded buffers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from botframework.server.direct import CYCLE
from botframework.server.write_timeout import (
    STREAM_HIGH_WATER_BYTES,
    STREAM_SNDBUF_BYTES,
    StreamStalledError,
    StreamWriteTimeout,
)

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = asyncio.Event()
        self.high_water: int | None = None
        self.sock = socket.socket()

    def is_closing(self) -> bool:
        return self.aborted.is_set()

    def abort(self) -> None:
        self.aborted.set()

    def set_write_buffer_limits(self, high: int) -> None:
        self.high_water = high

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class FakeCycle:
    """uvicorn's cycle as the middleware sees it: a send that waits like flow.drain() does while
    the client reads nothing, and returns once the connection is lost."""

    def __init__(self, stall_after: int) -> None:
        self.transport = FakeTransport()
        self.sent: list[dict[str, Any]] = []
        self.stall_after = stall_after

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(self.sent) > self.stall_after:
            await self.transport.aborted.wait()  # the drain, until connection_lost resumes it
            return  # uvicorn: disconnected, the send returns
        self.sent.append(message)


def _app(chunks: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for i in range(chunks):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    return app


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def test_a_stalled_send_drops_the_connection_after_the_timeout() -> None:
    cycle = FakeCycle(stall_after=3)
    middleware = StreamWriteTimeout(_app(10), timeout_s=0.05)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(middleware({"type": "http", "path": "/v1/chat/completions", CYCLE: cycle},
                                          _receive, cycle.send), 5)
        return loop.time() - t0

    elapsed = asyncio.run(run())
    assert cycle.transport.aborted.is_set()
    assert elapsed < 2  # one timeout: later sends return at once on the dropped connection
    assert len(cycle.sent) == 4  # the start and three chunks went out before the stall
    assert cycle.transport.high_water == STREAM_HIGH_WATER_BYTES
    assert cycle.transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * STREAM_SNDBUF_BYTES
    cycle.transport.sock.close()


def test_sends_that_complete_pass_through() -> None:
    cycle = FakeCycle(stall_after=10**9)
    asyncio.run(StreamWriteTimeout(_app(50), timeout_s=0.05)({"type": "http", CYCLE: cycle}, _receive, cycle.send))
    assert not cycle.transport.aborted.is_set() and len(cycle.sent) == 52
    cycle.transport.sock.close()


def test_without_uvicorn_s_cycle_the_stalled_send_is_abandoned() -> None:
    async def stuck_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()

    with pytest.raises(StreamStalledError):
        asyncio.run(StreamWriteTimeout(_app(1), timeout_s=0.05)({"type": "http"}, _receive, stuck_send))


def test_off_at_zero() -> None:
    app = _app(1)
    assert StreamWriteTimeout(app, timeout_s=0).timeout_s == 0
