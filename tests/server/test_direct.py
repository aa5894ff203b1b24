"""server/direct.py on real sockets and real event loops (asyncio and uvloop), no model.

The route's part is played by `route` below: the first chunk through the transport, then
arm() between deltas, as the chat and completions routes do. The engine thread publishes as
fast as it can while the reader does not read: the socket fills, the engine thread's writes
stop being taken whole, and the bytes must still arrive complete and in order.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from botframework.scheduler.output import Delta, FinishReason, RequestHandle, batched
from botframework.server.direct import DirectSSE
from botframework.server.sse import sse_choice, text_template

LOOPS: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
try:
    import uvloop

    LOOPS.append(uvloop.new_event_loop)
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    pass


def frame(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


def read_chunked(sock: socket.socket) -> list[bytes]:
    """Every chunk of a chunked body up to its last (empty) one, strictly framed."""
    buf, out = b"", []
    while True:
        while b"\r\n" not in buf:
            data = sock.recv(65536)
            assert data, "the connection closed before the last chunk"
            buf += data
        line, buf = buf.split(b"\r\n", 1)
        size = int(line, 16)
        while len(buf) < size + 2:
            data = sock.recv(65536)
            assert data, "the connection closed inside a chunk"
            buf += data
        assert buf[size:size + 2] == b"\r\n"
        if size == 0:
            return out
        out.append(buf[:size])
        buf = buf[size + 2:]


@pytest.mark.parametrize("new_loop", LOOPS, ids=[f.__module__ for f in LOOPS])
def test_direct_writes_stay_in_order_when_the_socket_fills(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    num = 3000
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop = new_loop()
    received: list[bytes] = []

    def reader() -> None:
        time.sleep(0.3)  # not reading while the engine thread writes
        received.extend(read_chunked(theirs))

    def engine(handle: RequestHandle) -> None:
        for i in range(num):
            with batched():
                handle.publish(Delta("r", text=f"{i:05d};",
                                     finish_reason=FinishReason.LENGTH if i == num - 1 else None))
            if i % 500 == 0:
                time.sleep(0.01)

    async def route() -> DirectSSE:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        cycle = SimpleNamespace(transport=transport, response_started=True, response_complete=False,
                                chunked_encoding=True)
        handle = RequestHandle("r", lambda _id: None, loop)
        direct = DirectSSE(cycle, handle, loop, lambda text: text.encode())
        deltas = handle.__aiter__()
        thread = threading.Thread(target=engine, args=(handle,))
        thread.start()
        try:
            async for delta in deltas:  # what the engine thread did not take: the usual path
                transport.write(frame(delta.text.encode()))
                if delta.finish_reason is not None:
                    transport.write(b"0\r\n\r\n")
                    break
                direct.arm()
        finally:
            direct.close()
            await asyncio.to_thread(thread.join)
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.01)
        return direct

    reading = threading.Thread(target=reader)
    reading.start()
    try:
        direct = loop.run_until_complete(asyncio.wait_for(route(), 60))
    finally:
        reading.join(60)
        loop.close()
        ours.close()
        theirs.close()
    assert b"".join(received).decode() == "".join(f"{i:05d};" for i in range(num))
    assert direct.chunks > 0, "the engine thread wrote nothing itself"
    assert direct.handed_back > 0, "the socket never filled: the test did not test the hand-back"
    assert direct.chunks + direct.handed_back < num  # some went the usual way after a hand-back


def test_a_closed_connection_drops_the_chunk_and_detaches() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.new_event_loop()

    async def main() -> tuple[list[str], DirectSSE]:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        cycle = SimpleNamespace(transport=transport, response_started=True, response_complete=False,
                                chunked_encoding=True)
        handle = RequestHandle("r", lambda _id: None, loop)
        direct = DirectSSE(cycle, handle, loop, lambda text: text.encode())
        direct.arm()
        handle.publish(Delta("r", text="a"))  # written by "the engine thread"
        theirs.close()
        time.sleep(0.05)
        for text in "bcd":  # the peer is gone: a send fails (EPIPE), and the sink lets go
            handle.publish(Delta("r", text=text))
        handle.publish(Delta("r", text="", finish_reason=FinishReason.CANCELLED))
        got = [d.text async for d in handle]
        direct.close()
        transport.close()
        return got, direct

    try:
        got, direct = loop.run_until_complete(main())
    finally:
        loop.close()
        ours.close()
    assert direct.chunks >= 1
    assert got[-1] == "" and set(got[:-1]) <= {"c", "d"}  # after the failed send, the usual way


def test_arm_waits_for_what_uvicorn_has_not_sent_and_for_the_started_response() -> None:
    loop = asyncio.new_event_loop()

    class Transport:
        buffered = 10

        def get_write_buffer_size(self) -> int:
            return self.buffered

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str) -> Any:
            return None

    ours, theirs = socket.socketpair()
    transport = Transport()
    transport.get_extra_info = lambda name: ours if name == "socket" else None  # type: ignore[method-assign]
    cycle = SimpleNamespace(transport=transport, response_started=False, response_complete=False,
                            chunked_encoding=True)
    handle = RequestHandle("r", lambda _id: None, loop)
    direct = DirectSSE(cycle, handle, loop, lambda text: text.encode())
    try:
        direct.arm()
        handle.publish(Delta("r", text="not started"))
        cycle.response_started = True
        direct.arm()
        handle.publish(Delta("r", text="buffered"))
        transport.buffered = 0
        direct.arm()  # two deltas queued and not consumed: arming now would let the next overtake them
        handle.publish(Delta("r", text="queued"))
        assert direct.chunks == 0

        async def consume(n: int) -> list[str]:
            deltas = handle.__aiter__()
            return [(await anext(deltas)).text for _ in range(n)]

        assert loop.run_until_complete(consume(3)) == ["not started", "buffered", "queued"]
        direct.arm()
        handle.publish(Delta("r", text="direct"))
        assert direct.chunks == 1
        theirs.settimeout(5)
        assert theirs.recv(100) == frame(b"direct")
    finally:
        direct.close()
        loop.close()
        ours.close()
        theirs.close()


def test_text_template_gives_the_same_bytes_as_the_whole_chunk() -> None:
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m \u2063 \"quoted\"",
            "system_fingerprint": None}

    def make(text: str) -> bytes:
        return sse_choice(base, {"index": 0, "text": text, "logprobs": None, "finish_reason": None}, True)

    fast = text_template(make)
    assert fast is not make
    for text in ["", "a", " \"quoted\" \\ ", "\n\t\r\x00\x1f", "é 漢字 🙂", "\u2028\u2029", "</s>", "x" * 5000]:
        assert fast(text) == make(text)
        assert json.loads(fast(text)[len(b"data: "):])["choices"][0]["text"] == text


def test_text_template_falls_back_when_the_marker_is_not_unique() -> None:
    from botframework.server import sse

    def make(text: str) -> bytes:  # a chunk that repeats the text: the marker shows twice
        return sse_choice({}, {"text": text, "again": text}, False)

    assert text_template(make) is make
    assert sse._MARK not in make("x").decode()


def _serve_and_stream(direct_stream: bool,
                      requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[list[bytes]], float]:
    """The app on a fake runtime behind a real uvicorn (httptools) on a loopback port: each
    request's chunked body, chunk by chunk, and the direct-chunks counter afterwards."""
    import uvicorn
    from fake_runtime import FakeRuntime

    from botframework.server.app import create_app
    from botframework.server.settings import ServerSettings

    runtime = FakeRuntime(reply="Hello from the fake model, streamed one character at a time.", token_delay_s=0.001)
    app = create_app(ServerSettings(model="fake-model", direct_stream=direct_stream),
                     runtime_factory=lambda _settings: runtime)  # type: ignore[arg-type, return-value]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, http="httptools", log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        bodies = []
        for path, body in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                payload = json.dumps(body).encode()
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(1)
                assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
                bodies.append(read_chunked(sock))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            metrics = b""
            while data := sock.recv(65536):
                metrics += data
        direct = sum(float(line.split()[-1]) for line in metrics.decode().splitlines()
                     if line.startswith("botframework_sse_direct_chunks_total "))
        return bodies, direct
    finally:
        server.should_exit = True
        thread.join(30)


def test_direct_and_usual_streams_send_the_same_chunks() -> None:
    """The same fake generations through a real uvicorn, with and without the direct path:
    chunk for chunk the same bytes (ids and timestamps aside)."""
    import re

    requests = [
        ("/v1/completions", {"model": "fake-model", "prompt": "Once", "stream": True}),
        ("/v1/completions", {"model": "fake-model", "prompt": "Once", "stream": True,
                             "stream_options": {"include_usage": True}, "max_tokens": 40}),
        ("/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
                                  "stream": True, "stream_options": {"include_usage": True}}),
    ]
    direct, num_direct = _serve_and_stream(True, requests)
    usual, num_usual = _serve_and_stream(False, requests)

    def normal(chunks: list[bytes]) -> list[bytes]:
        return [re.sub(rb'"created":\d+', b'"created":0', re.sub(rb'"id":"[^"]+"', b'"id":""', c)) for c in chunks]

    assert [normal(b) for b in direct] == [normal(b) for b in usual]
    assert all(len(b) > 20 for b in usual)  # one chunk an event: role, a token each, finish, [usage], [DONE]
    assert num_usual == 0
    assert num_direct > 0.8 * sum(len(b) for b in direct)


def test_a_native_run_keeps_the_socket_until_it_ends_and_hands_its_rest_to_the_transport() -> None:
    """begin_native (a run of steps sends this stream's chunks itself): the dup's fd and the
    chunk's template; a stream closed during the run keeps that fd open until end_native (a
    reused descriptor number must never get the run's chunks). After a run: a chunk's end the
    socket did not take goes to the transport and the sink lets go; EAGAIN keeps it attached."""
    import errno
    import os

    from botframework.engine.step import StreamSent
    from botframework.server.sse import DirectText

    ours, theirs = socket.socketpair()
    loop = asyncio.new_event_loop()
    base = {"id": "cmpl-1", "object": "text_completion"}
    chunk = DirectText(lambda text: sse_choice(base, {"index": 0, "text": text}, False))

    async def main() -> None:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        cycle = SimpleNamespace(transport=transport, response_started=True, response_complete=False,
                                chunked_encoding=True)
        handle = RequestHandle("r", lambda _id: None, loop)
        direct = DirectSSE(cycle, handle, loop, chunk)
        direct.arm()
        assert handle.native_ready()
        params = handle.begin_native()
        assert params is not None
        fd, head, tail, rstrip, pending = params
        assert fd != ours.fileno() and not rstrip and pending == ""
        assert head + b'"hi"' + tail == chunk("hi")
        direct.close()  # the stream ends while the run is under way
        os.fstat(fd)  # still open
        handle.publish_native(Delta("r", text="hi", token_ids=(1,)), StreamSent(1))  # dropped: detached
        handle.end_native()
        with pytest.raises(OSError):
            os.fstat(fd)

        handle = RequestHandle("r2", lambda _id: None, loop)
        direct = DirectSSE(cycle, handle, loop, chunk)
        direct.arm()
        assert handle.begin_native() is not None
        handle.end_native()
        handle.publish_native(Delta("r2", text="a", token_ids=(1,)), StreamSent(1, errno.EAGAIN))
        assert handle.native_ready() and direct.native_tokens == 1  # the next chunk goes the usual way
        handle.publish_native(Delta("r2", text="bc", token_ids=(2, 3)), StreamSent(2, 0, b"end of it"))
        assert not handle.native_ready() and direct.native_tokens == 3 and direct.handed_back == 1
        await asyncio.sleep(0.05)
        direct.close()

        handle = RequestHandle("r3", lambda _id: None, loop)
        gone = DirectSSE(cycle, handle, loop, chunk)
        gone.arm()
        assert handle.begin_native() is not None
        handle.end_native()
        # the client went away: the run's second token was taken, but its send failed
        handle.publish_native(Delta("r3", text="de", token_ids=(4, 5)), StreamSent(2, errno.EPIPE))
        assert not handle.native_ready() and gone.native_tokens == 1
        gone.close()
        transport.close()

    try:
        loop.run_until_complete(main())
        theirs.settimeout(5)
        assert theirs.recv(100) == b"end of it"
    finally:
        loop.close()
        ours.close()
        theirs.close()


def test_a_chat_stream_is_sent_natively_only_while_its_content_is_plain() -> None:
    """The chat route's direct formatter: native() gives the content chunk's template and the
    whitespace its streamer holds back, only for a plain parser with nothing else streamed."""
    from botframework.chat.parse import OutputMode, OutputParser
    from botframework.chat.stream import MessageStreamer
    from botframework.server.routes.chat import _DirectMessage

    def chunk(delta: dict[str, Any]) -> bytes:
        return sse_choice({"id": "c"}, {"index": 0, "delta": delta}, False)

    streamer = MessageStreamer(OutputParser(OutputMode.TEXT))
    direct = _DirectMessage(streamer, chunk)
    params = direct.native()
    assert params is not None and params[2:] == (True, "")
    head, tail = params[:2]
    assert direct("Hello \n ") == head + b'"Hello"' + tail
    assert direct.native() == (head, tail, True, " \n ")  # held until text follows
    assert direct("x") == head + b'" \\n x"' + tail
    assert streamer.plain_pending() == ""
    thinking = MessageStreamer(OutputParser(OutputMode.TEXT, params={"supports_thinking": True}))
    assert _DirectMessage(thinking, chunk).native() is None
    streamer._next_parse = 1.0  # parses spaced out: a delta may be held whole
    assert direct.native() is None


def test_an_anthropic_stream_is_sent_natively_while_a_text_block_is_open() -> None:
    """The Messages stream's direct formatter: no native run before its text block opens (the
    block's start goes the usual way); then the block's content_block_delta template, the
    same bytes as the formatter's, and the whitespace the streamer holds back."""
    from botframework.chat.parse import OutputMode, OutputParser
    from botframework.chat.stream import MessageStreamer
    from botframework.server.adapters._anthropic_render import ContentBlocks
    from botframework.server.adapters.anthropic import _DirectBlocks

    direct = _DirectBlocks(MessageStreamer(OutputParser(OutputMode.TEXT)), ContentBlocks())
    assert direct.native() is None
    opened = direct("Hello \n")
    assert b"event: content_block_start" in opened and b'"text_delta","text":"Hello"' in opened
    params = direct.native()
    assert params is not None and params[2:] == (True, " \n")
    head, tail = params[:2]
    assert direct("x") == head + b'" \\nx"' + tail
    assert json.loads((head + b'"y"' + tail).split(b"data: ", 1)[1]) == {
        "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "y"}}
    direct.streamer._next_parse = 1.0  # parses spaced out: a delta may be held whole
    assert direct.native() is None


def test_an_ollama_stream_is_sent_natively_with_the_runs_timestamp() -> None:
    """Ollama's direct formatter: native() gives the content line's template with the run's
    created_at; the lines it makes are the formatter's, timestamps aside."""
    from botframework.chat.parse import OutputMode, OutputParser
    from botframework.chat.stream import MessageStreamer
    from botframework.server.adapters._ollama_stream import Answer, Clock, _DirectLines

    for chat in (True, False):
        answer = Answer(None, None, None, "m:latest", Clock(0), chat)  # type: ignore[arg-type]
        direct = _DirectLines(answer, MessageStreamer(OutputParser(OutputMode.TEXT)))
        params = direct.native()
        assert params is not None and params[2:] == (True, "")
        head, tail = params[:2]
        native = json.loads(head + b'"a \\"b\\""' + tail)
        usual = json.loads(direct('a "b"'))
        assert native.pop("created_at") and usual.pop("created_at")
        assert native == usual == {"model": "m:latest", "done": False,
                                   **({"message": {"role": "assistant", "content": 'a "b"'}} if chat
                                      else {"response": 'a "b"'})}
        assert direct("  ") == b"" and direct.native()[3] == "  "  # type: ignore[index]


def test_a_responses_stream_is_sent_natively_numbered_once_its_message_is_open() -> None:
    """The Responses stream's direct formatter: no native run before its message item opens;
    then the output_text.delta template with the next sequence number, the same bytes as the
    formatter's; numbered_to (after a run) moves the counter on to the run's next number."""
    from botframework.chat.parse import OutputMode, OutputParser
    from botframework.chat.stream import MessageStreamer
    from botframework.server.adapters._responses_items import OutputBuilder
    from botframework.server.adapters.openai_responses import _DirectEvents, _Events

    events = _Events()
    events({"type": "response.created"})
    direct = _DirectEvents(MessageStreamer(OutputParser(OutputMode.TEXT)), OutputBuilder(), events)
    assert direct.native() is None
    opened = direct("Hello \n")
    assert opened.count(b"event: ") == 3 and b'"delta":"Hello"' in opened and events.next == 4
    params = direct.native()
    assert params is not None and params[2:4] == (True, " \n") and params[4] == 4
    head, tail, number_tail = params[0], params[1], params[5]
    native = head + b'" \\nx"' + tail + b"4" + number_tail
    assert direct("x") == native and events.next == 5
    payload = json.loads(native.split(b"data: ", 1)[1])
    assert payload["type"] == "response.output_text.delta" and payload["delta"] == " \nx"
    assert payload["sequence_number"] == 4 and payload["output_index"] == 0
    direct("yz")  # what a run sent is fed back (took_natively), then its numbers are taken
    direct.numbered_to(9)
    assert direct.native()[4] == 9 and json.loads(direct("w").split(b"data: ", 1)[1])["sequence_number"] == 9  # type: ignore[index]


def test_numbered_template_gives_the_same_bytes_or_none() -> None:
    from botframework.server.sse import numbered_template, sse

    def make(text: str, number: int) -> bytes:
        return sse({"type": "t", "delta": text, "sequence_number": number})

    fast = numbered_template(make)
    assert fast is not None
    for text in ["", " \"quoted\" \\ ", "\n\t\x00", "é 漢字 🙂", "\u2028"]:
        for number in (0, 5, 123456789012):
            assert fast(text, number) == make(text, number)
    assert numbered_template(lambda text, number: sse({"n": number, "delta": text})) is None  # the number first
    assert numbered_template(lambda text, number: sse({"a": text, "b": text, "n": number})) is None
