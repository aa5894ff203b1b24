"""OpenAI's response framing: whole JSON answers and server-sent events.

    whole:    json_response(payload)  (usage_json / total_usage for the usage block)
    streamed: per choice, the route's generator yields sse_choice(...) chunks
              fan_in(streams, StreamState): the choices' chunks as they come; the first failed
                  choice's sse_error event ends the response
              sse_choices: fan_in + [the summed usage chunk] + [DONE]; closing it cancels
                  the sequences still running
    text_template: a text chunk's bytes as head + JSON string + tail (the engine thread formats
                  direct streams' chunks with it: server/direct.py)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from botframework.engine.step import PENDING_CAP
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta, Usage
from botframework.server.errors import error_body, to_api_error

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Started = list[tuple[Delta, DeltaStream]]  # each choice's first delta and the rest of its stream


def json_response(payload: dict[str, Any]) -> Response:
    """A whole answer, encoded once (FastAPI would walk it with jsonable_encoder first)."""
    return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def sse_choice(base: dict[str, Any], choice: dict[str, Any], include_usage: bool) -> bytes:
    """One choice's chunk of a streamed response; with stream_options.include_usage every chunk
    carries "usage": null, as OpenAI sends them (the usage chunk comes last)."""
    payload: dict[str, Any] = {**base, "choices": [choice]}
    if include_usage:
        payload["usage"] = None
    return sse(payload)


def sse_error(exc: BaseException) -> bytes:
    """An error in the middle of a stream: one OpenAI-shaped error event (then the caller ends it)."""
    err = to_api_error(exc)
    return sse(error_body(err.message, err.type, err.param, err.code))


_MARK = "\u2063botframework-text\u2063"
_PROBE = 'a "q" \\ \n\t\u00e9 \U0001f642 </s> \u2028 \x01\x1f\x7f'  # what a template must write as make does


def text_template(make: Callable[[str], bytes]) -> Callable[[str], bytes]:
    """`make`, a chunk's bytes for a text that is one JSON string in it, as head + the string's
    JSON + tail: the same bytes for ~1 us, not a json.dumps of the whole chunk (the engine
    thread formats a direct stream's chunks: see server/direct.py). `make` itself if the chunk
    cannot be split so (the marker twice), or the split gets a probe wrong."""
    mark = encode_basestring(_MARK).encode()
    parts = make(_MARK).split(mark)
    if len(parts) != 2:
        return make
    fast = TextTemplate(*parts)
    return fast if fast(_PROBE) == make(_PROBE) else make


class TextTemplate:
    """A chunk's bytes for a text: head + the text as a JSON string + tail (text_template).
    Native code writes the same bytes for ASCII text (engine/step.py's NativeStream)."""

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = head
        self.tail = tail

    def __call__(self, text: str) -> bytes:
        return self.head + encode_basestring(text).encode() + self.tail


class DirectText:
    """A direct stream's formatter (server/direct.py) for text that goes out as it comes (a
    completion's): each text delta's chunk, b"" for none. A run of steps may write the chunks
    itself (native()) when the chunk is a TextTemplate."""

    def __init__(self, chunk: Callable[[str], bytes]) -> None:
        self.chunk = text_template(chunk)

    def __call__(self, text: str) -> bytes:
        return self.chunk(text) if text else b""

    def native(self) -> tuple[bytes, bytes, bool, str] | None:
        """(head, tail, rstrip, the whitespace held) for a NativeStream, or None."""
        chunk = self.chunk
        return (chunk.head, chunk.tail, False, "") if isinstance(chunk, TextTemplate) else None


class NumberedTemplate:
    """An event's bytes for a text and its number (a Responses event's sequence_number): head +
    the text as a JSON string + tail + the number + number_tail (numbered_template). Native
    code writes the same bytes for ASCII text, counting the number up (NativeStream.number)."""

    def __init__(self, head: bytes, tail: bytes, number_tail: bytes) -> None:
        self.head = head
        self.tail = tail
        self.number_tail = number_tail

    def __call__(self, text: str, number: int) -> bytes:
        return self.head + encode_basestring(text).encode() + self.tail + b"%d" % number + self.number_tail


_NUMBER_MARK = 918273645546372819


def numbered_template(make: Callable[[str, int], bytes]) -> NumberedTemplate | None:
    """`make(text, number)` split as a NumberedTemplate (the text first, then the number), or
    None where it cannot be (either mark twice, the number before the text, a probe wrong)."""
    mark = encode_basestring(_MARK).encode()
    parts = make(_MARK, _NUMBER_MARK).split(mark)
    if len(parts) != 2:
        return None
    after = parts[1].split(b"%d" % _NUMBER_MARK)
    if len(after) != 2:
        return None
    fast = NumberedTemplate(parts[0], *after)
    return fast if all(fast(_PROBE, n) == make(_PROBE, n) for n in (0, 7, 10**12)) else None


def native_content(pending: str | None, template: Callable[..., bytes] | None, number: int = -1
                   ) -> tuple[Any, ...] | None:
    """A NativeStream's (head, tail, rstrip, the whitespace held) for a message's content, whose
    streamer holds trailing whitespace back: `pending` is that whitespace
    (MessageStreamer.plain_pending(), None while the streamer does more than that) and
    `template` the content chunk's formatter; a NumberedTemplate's adds (number, number_tail),
    `number` being the next chunk's. None when a run cannot send it: the streamer parses, the
    held text is not ASCII or too long, or the chunk is neither template."""
    if pending is None or not pending.isascii() or len(pending) > PENDING_CAP:
        return None
    if isinstance(template, NumberedTemplate) and number >= 0:
        return template.head, template.tail, True, pending, number, template.number_tail
    if not isinstance(template, TextTemplate):
        return None
    return template.head, template.tail, True, pending


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
    if usage.truncated_tokens:
        out["truncated_tokens"] = usage.truncated_tokens  # extension: dropped by overflow="truncate"
    drafts = prediction_details(usage)
    if drafts:
        out["completion_tokens_details"] = drafts
    return out


def prediction_details(usage: Usage | None) -> dict[str, int]:
    """Speculative drafts in OpenAI's Predicted Outputs fields, for every protocol's usage:
    draft tokens the model kept and those it rejected. Empty for a request that did not draft,
    so every other response keeps its protocol's exact shape."""
    if usage is None or not usage.draft_tokens:
        return {}
    return {"accepted_prediction_tokens": usage.accepted_draft_tokens,
            "rejected_prediction_tokens": usage.draft_tokens - usage.accepted_draft_tokens}


def total_usage(usages: list[Usage | None]) -> Usage | None:
    """OpenAI's usage for n choices: the prompt once, completion (and draft) tokens of all choices."""
    known = [u for u in usages if u is not None]
    if not known:
        return None
    first = known[0]
    return Usage(prompt_tokens=first.prompt_tokens, completion_tokens=sum(u.completion_tokens for u in known),
                 cached_tokens=first.cached_tokens, truncated_tokens=first.truncated_tokens,
                 draft_tokens=sum(u.draft_tokens for u in known),
                 accepted_draft_tokens=sum(u.accepted_draft_tokens for u in known))


@dataclass
class StreamState:
    """Shared by a response's per-choice SSE generators."""

    error_event: bytes | None = None  # a choice failed: this event ends the response
    usages: list[Usage | None] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error_event is not None

    def fail(self, exc: BaseException) -> None:
        if self.error_event is None:  # the first failure is the one reported
            self.error_event = sse_error(exc)


async def fan_in(streams: list[AsyncIterator[bytes]], state: StreamState) -> AsyncIterator[bytes]:
    """The events of every choice's stream as they come; a failed choice's error event ends it."""
    if len(streams) == 1:  # the common case: no tasks, no queue
        try:
            async for item in streams[0]:
                yield item
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        if state.error_event is not None:
            yield state.error_event
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    ended = object()

    async def pump(stream: AsyncIterator[bytes]) -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer below
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(ended)

    tasks = [asyncio.ensure_future(pump(stream)) for stream in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is ended:
                remaining -= 1
            else:
                yield item
            if state.error_event is not None:
                yield state.error_event
                return
    finally:
        for task in tasks:
            task.cancel()  # a choice still generating closes its stream: its sequence is cancelled
        await asyncio.gather(*tasks, return_exceptions=True)


async def sse_choices(started: Started, streams: list[AsyncIterator[bytes]], state: StreamState,
                      base: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A streamed response: every choice's chunks as they come, the summed usage chunk if asked
    (not after an error), then [DONE]. Closing it cancels the sequences still running."""
    try:
        async for event in fan_in(streams, state):
            yield event
        if include_usage and not state.failed:
            yield sse({**base, "choices": [], "usage": usage_json(total_usage(state.usages))})
        yield sse("[DONE]")
    finally:
        for _, deltas in started:
            await deltas.aclose()


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse whose headers and first chunk go out in the route's own task.

    The routes build it once their first delta is in, so its first chunk is ready: Starlette
    (ASGI spec 2.3, uvicorn's) would first start a task group and a task for the stream and
    send from that task a loop iteration later. Here the headers and the first chunk are sent
    at once; the rest streams as Starlette does, listening for the client's disconnect."""

    _started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            iterator = self.body_iterator = aiter(self.body_iterator)
            first: bytes | memoryview | None
            try:
                first = _as_bytes(await anext(iterator), self.charset)
            except StopAsyncIteration:
                first = None
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self._started = True
            await send({"type": "http.response.body", "body": first or b"", "more_body": first is not None})
            if first is None:
                if self.background is not None:
                    await self.background()
                return
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        if not self._started:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": _as_bytes(chunk, self.charset), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _as_bytes(chunk: str | bytes | memoryview, charset: str) -> bytes | memoryview:
    return chunk.encode(charset) if isinstance(chunk, str) else chunk
