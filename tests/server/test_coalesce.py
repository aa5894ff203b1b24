"""CoalesceHead on a real TCP connection: a JSON response's head is held (TCP_CORK) until its
first body message has been written, then both go; a stream's head is never held; a response
that fails after its start is let go too."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from botframework.server.coalesce import CoalesceHead
from botframework.server.direct import CYCLE

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream")]


class Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class Cycle:
    """uvicorn's cycle as seen here: its send writes each message to the socket at once, and
    notes whether the socket was corked when it did."""

    def __init__(self, sock: socket.socket) -> None:
        self.transport = Transport(sock)
        self.corked_at: list[tuple[str, int]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.corked_at.append((message["type"], self.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)))
        data = b"HEAD\r\n" if message["type"] == "http.response.start" else message.get("body", b"")
        self.transport.sock.sendall(data)


@pytest.fixture
def connection() -> Any:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def _run(server: socket.socket, messages: list[dict[str, Any]], fail: bool = False) -> Cycle:
    cycle = Cycle(server)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        if fail:
            raise RuntimeError("the route failed")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    asyncio.run(CoalesceHead(app)({"type": "http", CYCLE: cycle}, receive, cycle.send))
    return cycle


def _cork(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


def _read(client: socket.socket, n: int) -> bytes:
    client.settimeout(5)  # uncorked, it comes at once; corked, only after 200 ms
    data = b""
    while len(data) < n:
        data += client.recv(n - len(data))
    return data


def test_a_json_response_head_waits_for_its_body_then_both_go(connection: Any) -> None:
    server, client = connection
    cycle = _run(server, [{"type": "http.response.start", "status": 200, "headers": JSON},
                          {"type": "http.response.body", "body": b"{}", "more_body": False}])
    assert cycle.corked_at == [("http.response.start", 1), ("http.response.body", 1)]
    assert _cork(server) == 0
    assert _read(client, 8) == b"HEAD\r\n{}"


def test_only_the_first_body_piece_is_held(connection: Any) -> None:
    server, _ = connection
    cycle = _run(server, [{"type": "http.response.start", "status": 200, "headers": JSON},
                          {"type": "http.response.body", "body": b"[", "more_body": True},
                          {"type": "http.response.body", "body": b"]", "more_body": False}])
    assert [corked for _, corked in cycle.corked_at] == [1, 1, 0]


def test_a_stream_head_is_never_held(connection: Any) -> None:
    server, client = connection
    cycle = _run(server, [{"type": "http.response.start", "status": 200, "headers": SSE},
                          {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}])
    assert [corked for _, corked in cycle.corked_at] == [0, 0]


def test_a_route_that_fails_after_its_start_leaves_the_socket_uncorked(connection: Any) -> None:
    server, client = connection
    with pytest.raises(RuntimeError):
        _run(server, [{"type": "http.response.start", "status": 200, "headers": JSON}], fail=True)
    assert _cork(server) == 0
    assert _read(client, 6) == b"HEAD\r\n"
