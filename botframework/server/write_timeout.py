"""Drop a client that stops reading: a response body that cannot be handed to the connection for
stream_write_timeout_s ends its connection, and so its request.

    uvicorn -> ExposeConnection -> StreamWriteTimeout -> ... routes
    a streamed response's start -> its socket's and transport's buffers bounded (STREAM_*_BYTES)
    send(body) -> uvicorn writes to its transport; past the write buffer's high-water mark
                  (the client reads nothing: kernel buffers full) it awaits flow.drain()
    a timer started with each body send, cancelled when the send returns; if it fires:
        uvicorn's cycle known (ExposeConnection): transport.abort() -> connection_lost ->
            the drain returns, the cycle is disconnected, receive() says http.disconnect ->
            Starlette cancels the streaming route -> its generators cancel the sequence
        otherwise: the send is abandoned with StreamStalledError (the server closes it)

Why at the ASGI edge: the stall is the transport's; every protocol's stream goes through this
one `send`. A timer handle per body message costs ~2 us; a send that completes at once (the
usual case) only starts and cancels it. The direct path (server/direct.py) never blocks: what
the kernel does not take goes back to the transport, and the route's next send waits here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botframework.server.direct import CYCLE

log = logging.getLogger("botframework.server")

# A stream's buffers, kept small so that a client that stops reading blocks the next send soon
# (the timer starts then): Linux autotunes a socket's send buffer up to tcp_wmem's max (4 MiB),
# minutes of tokens, and asyncio pauses a transport at 64 KiB. 32 KiB (the kernel doubles it)
# + 16 KiB still hold more than a bandwidth-delay product of token chunks (64 KiB / 100 ms RTT
# = 640 KB/s, a few thousand tokens a second).
STREAM_SNDBUF_BYTES = 32 << 10
STREAM_HIGH_WATER_BYTES = 16 << 10
_STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson")


def _streamed(start: Message) -> bool:
    return any(name.lower() == b"content-type" and value.startswith(_STREAM_TYPES)
               for name, value in start.get("headers", ()))


def _bound_send_buffer(transport: Any) -> None:
    try:
        transport.set_write_buffer_limits(high=STREAM_HIGH_WATER_BYTES)
    except (AttributeError, ValueError, NotImplementedError):
        pass
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:  # set, it also turns the autotuning off for this socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
    except OSError:  # not a socket that takes it (a pipe, a test transport): the timer still works
        pass


class StreamStalledError(ConnectionError):
    """The client read nothing for stream_write_timeout_s; its connection is dropped."""


class StreamWriteTimeout:
    """Pure-ASGI middleware, inside ExposeConnection (it wraps uvicorn's own `send`, which
    ExposeConnection must see unwrapped). `timeout_s` 0 or less: off."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_s <= 0:
            await self.app(scope, receive, send)
            return
        timeout_s = self.timeout_s
        cycle: Any = scope.get(CYCLE)
        loop = asyncio.get_running_loop()
        path = scope.get("path", "")

        def stalled() -> None:
            if cycle.transport.is_closing():
                return
            log.warning("%s: the client read nothing for %.0f s: connection dropped, request cancelled",
                        path, timeout_s)
            cycle.transport.abort()  # connection_lost: the pending drain returns, receive() disconnects

        async def guarded_send(message: Message) -> None:
            if message["type"] != "http.response.body":
                if cycle is not None and message["type"] == "http.response.start" and _streamed(message):
                    _bound_send_buffer(cycle.transport)
                await send(message)
            elif cycle is not None:
                timer = loop.call_later(timeout_s, stalled)
                try:
                    await send(message)
                finally:
                    timer.cancel()
            else:  # not uvicorn's httptools cycle: no transport to abort, give the send up
                try:
                    await asyncio.wait_for(send(message), timeout_s)
                except TimeoutError:
                    log.warning("%s: the client read nothing for %.0f s: response abandoned", path, timeout_s)
                    raise StreamStalledError(f"the client read nothing for {timeout_s:.0f} s") from None

        await self.app(scope, receive, guarded_send)
