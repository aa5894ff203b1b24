"""A running stream's chunks written to the client's socket by the engine thread.

    uvicorn (httptools) -> ExposeConnection: scope[CYCLE] = the request's response cycle
    route: DirectSSE.attach(http, deltas, ...); the headers and the first chunk go through
      Starlette and uvicorn as usual; then, as the route waits for each next delta
      (runtime.stream.DeltaStream), DirectSSE.arm(): uvicorn's write buffer is empty and
      every delta published so far has been consumed -> handle.attach_direct(self)
    engine thread: handle.publish(delta) -> DirectSSE.take(delta): the route's chunk for it,
      framed as an HTTP/1.1 chunk, one send(MSG_DONTWAIT) on a dup of the connection's socket
    the last delta, logprobs, a text the route cannot format here: declined, it goes the usual
      way (and the route arms again after it); a send that does not complete: the rest goes
      to uvicorn's transport on the event loop, and the stream goes on the usual way

Why: at one stream on 2 cores with 2 compute threads, the event loop's work per token (a
wake-up, the queue, the route's generators, Starlette's and uvicorn's send; ~0.15-0.25 ms of
CPU) runs on a core that llama_decode is using, and the decode waits for it. From the engine
thread, between two decodes, the same chunk costs a format and a send (~0.03 ms).

Only where it is known to be right: uvicorn's httptools protocol with a chunked response,
plain TCP (no TLS), a response uvicorn has started, one choice. Anything else, and any
failure to arm, leaves the stream on the usual path: same bytes, same order.

The socket is a dup: if the client goes away and uvicorn closes its own descriptor, ours
still names the same (dead) connection, never a new one that reused the number. A send to a
dead connection fails; the chunk is dropped, and the disconnect reaches the route as usual
(Starlette's listen_for_disconnect) and cancels the request.

Native: when the route's formatter has native() (sse.DirectText, a chat's plain content), a
run of steps on the engine thread sends the chunks itself, from C, between its decodes
(engine/step.py's NativeStream: head + JSON string + tail, ASCII text only):
    begin_native (engine thread, before the run): the dup's fd, kept open until end_native
      even if the stream closes meanwhile (close() leaves it to end_native)
    took_natively (after the run): the route's formatter is fed the sent text, so its state
      (a chat's held whitespace) is as if the chunks had gone through take(), and a numbered
      formatter (Responses events) takes the run's next number; the end of a chunk the socket
      took only part of goes to uvicorn's transport, as in take()
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import Request as HTTPRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from botframework.engine.step import StreamSent
from botframework.scheduler.output import Delta, RequestHandle, Taken

CYCLE = "botframework.response_cycle"  # scope key: uvicorn's response cycle of this request


class ExposeConnection:
    """Outermost pure-ASGI middleware: puts uvicorn's response cycle (the owner of `send`, which
    knows the transport and whether the response is chunked) into the scope for DirectSSE."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cycle = getattr(send, "__self__", None)
            if type(cycle).__module__ == "uvicorn.protocols.http.httptools_impl" \
                    and hasattr(cycle, "transport") and hasattr(cycle, "chunked_encoding"):
                scope[CYCLE] = cycle
        await self.app(scope, receive, send)


class DirectSSE:
    """One stream's DirectSink. `format(text)` is the route's chunk bytes for a plain text delta
    (b"" when nothing is to be sent yet), or None to leave it to the route; it runs on the
    engine thread while the route waits for the next delta, so it may use the route's state."""

    def __init__(self, cycle: Any, handle: RequestHandle, loop: asyncio.AbstractEventLoop,
                 format: Callable[[str], bytes | None], metrics: Any = None) -> None:
        self._metrics = metrics
        self._cycle = cycle
        self._transport: asyncio.Transport = cycle.transport
        self._handle = handle
        self._loop = loop
        self._format = format
        self._native_format: Callable[[], tuple[Any, ...] | None] | None = getattr(
            format, "native", None)
        self.sends_natively = self._native_format is not None  # (RequestHandle.native_ready)
        self._sock: socket.socket | None = None
        self._closed = False
        self._fd_lock = threading.Lock()  # close() vs. a run that sends on the socket
        self._native_busy = False         # a run of steps may be sending on it (begin_native)
        self.chunks = 0     # written by the engine thread
        self.native_tokens = 0  # tokens whose text a run of steps sent itself (a failed send not counted)
        self.handed_back = 0  # sends that did not complete: their rest went to the transport

    @classmethod
    def attach(cls, http: HTTPRequest, deltas: Any, format: Callable[[], Callable[[str], bytes | None]]) -> None:
        """Give the stream read from `deltas` (a runtime.stream.DeltaStream, from generation.start)
        a DirectSSE, if its connection allows it: armed before each wait for a delta, closed
        with `deltas`.
        `format()` makes the chunk formatter (only called when there will be a DirectSSE)."""
        cycle = http.scope.get(CYCLE)
        handle = getattr(deltas, "handle", None)
        settings = getattr(http.app.state, "settings", None)
        if cycle is None or handle is None or (settings is not None and not settings.direct_stream):
            return
        transport = cycle.transport
        if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("socket") is None:
            return
        deltas.direct = cls(cycle, handle, asyncio.get_running_loop(), format(),
                            getattr(http.app.state, "metrics", None))

    def arm(self) -> None:
        """Event loop, between two deltas: let the engine thread write the next ones, if what
        went through uvicorn is all in the kernel (so nothing we write can overtake it)."""
        cycle, transport = self._cycle, self._transport
        if self._closed or not cycle.response_started or cycle.response_complete or cycle.chunked_encoding \
                is not True or transport.is_closing() or transport.get_write_buffer_size():
            return
        if self._sock is None:
            try:
                self._sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
            except OSError:
                self._closed = True
                return
        self._handle.attach_direct(self)

    def take(self, delta: Delta) -> Taken:
        """Engine thread, the handle's lock held."""
        if delta.logprobs or self._sock is None:
            return Taken.NO
        body = self._format(delta.text)
        if body is None:
            return Taken.NO
        if not body:
            return Taken.YES
        frame = b"%x\r\n%b\r\n" % (len(body), body)
        try:
            sent = self._sock.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client is gone: the route hears it from uvicorn and cancels
            return Taken.YES_DETACH
        if sent == len(frame):
            self.chunks += 1
            return Taken.YES
        return self._hand_back(frame[sent:])

    def _hand_back(self, rest: bytes) -> Taken:
        """The end of a chunk the socket took only in part: to uvicorn's transport, after what
        is in the kernel and before anything the route sends next; the sink lets go."""
        self.handed_back += 1
        try:
            self._loop.call_soon_threadsafe(self._transport.write, rest)
        except RuntimeError:  # the loop is closed: the server is going away
            pass
        return Taken.YES_DETACH

    def begin_native(self) -> tuple[Any, ...] | None:
        """Engine thread, the handle's lock held: (fd, head, tail, rstrip, pending[, number,
        number_tail]) for a run that sends this stream's chunks itself, or None (the formatter
        cannot now)."""
        params = self._native_format() if self._native_format is not None else None
        if params is None:
            return None
        with self._fd_lock:
            if self._closed or self._sock is None:
                return None
            self._native_busy = True
            return (self._sock.fileno(), *params)

    def took_natively(self, delta: Delta, sent: StreamSent) -> Taken:
        """Engine thread, the handle's lock held: a run sent `delta`'s text itself."""
        self._format(delta.text)  # (bytes already sent: only the route's state matters)
        if sent.number >= 0:  # numbered events: the run numbered each chunk it sent
            self._format.numbered_to(sent.number)  # type: ignore[attr-defined]
        failed = sent.error not in (0, errno.EAGAIN)  # the last taken token's send failed: the client is gone
        self.native_tokens += sent.num_sent - failed
        if sent.rest:
            return self._hand_back(sent.rest)
        return Taken.YES_DETACH if failed else Taken.YES

    def end_native(self) -> None:
        """Engine thread: the run is over; the socket closes now if the stream closed meanwhile."""
        with self._fd_lock:
            self._native_busy = False
            if self._closed and self._sock is not None:
                self._sock.close()
                self._sock = None

    def close(self) -> None:
        """Event loop, when the stream ends (or is closed): the engine thread writes no more."""
        if self._closed:
            return
        self._handle.detach_direct()
        with self._fd_lock:
            self._closed = True
            if self._sock is not None and not self._native_busy:  # (else end_native closes it)
                self._sock.close()
                self._sock = None
        if self._metrics is not None:
            self._metrics.direct_chunks.inc(self.chunks)
            self._metrics.direct_native_tokens.inc(self.native_tokens)
            self._metrics.direct_handed_back.inc(self.handed_back)
