"""Ollama's answers to /api/chat and /api/generate: one JSON object, or NDJSON lines.

    started (generation.start: first delta + DeltaStream)
      whole:  generation.collect -> chat.plan.finish_message -> one object, done: true
      stream: per delta, MessageStreamer pieces (content / thinking) -> {"message"|"response", done: false}
              lines; tool calls whole in one line at the end (Ollama sends them whole); then the
              done line with done_reason and the metrics; an engine error or output that fails
              its schema -> an {"error"} line, and the stream ends (the status is already 200)
              the client goes away -> the generator is closed -> the sequence is cancelled
    metrics: total/load/prompt_eval/eval durations in nanoseconds (from the request's clock and
             the scheduler's timings), prompt_eval_count / eval_count (the usage)

The pieces are the ones /v1/chat/completions streams, so a stream adds up to the whole answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request as HTTPRequest
from fastapi.responses import Response, StreamingResponse

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCall
from botframework.chat.plan import ChatPlan, check_message, finish_message
from botframework.chat.stream import MessageStreamer
from botframework.errors import BotframeworkError
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta, Usage
from botframework.server.adapters._ollama_protocol import timestamp, tool_call_json
from botframework.server.direct import DirectSSE
from botframework.server.errors import to_api_error
from botframework.server.generation import collect, openai_finish_reason, record, tokenizer_call
from botframework.server.routes.chat import _logprob_entry
from botframework.server.runtime import Runtime
from botframework.server.sse import (
    SSE_HEADERS,
    EventStreamResponse,
    json_response,
    native_content,
    prediction_details,
    text_template,
)

NDJSON = "application/x-ndjson"


def line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def error_line(exc: BaseException) -> bytes:
    """An error after the stream began: Ollama's {"error": ...} line (its clients raise it)."""
    return line({"error": to_api_error(exc).message})


def ndjson_response(lines: AsyncIterator[bytes]) -> StreamingResponse:
    return EventStreamResponse(_guarded(lines), media_type=NDJSON, headers=SSE_HEADERS)


async def _guarded(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines; a failure once they began (the status is sent) becomes a last {"error"} line."""
    try:
        async for item in lines:
            yield item
    except Exception as exc:  # noqa: BLE001 - reported to the client, as Ollama's streamResponse does
        yield error_line(exc)
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


@dataclass
class Clock:
    """A request's times (perf_counter_ns): when it arrived, when its model was ready."""

    started_ns: int
    loaded_ns: int = 0

    def loaded(self) -> None:
        self.loaded_ns = time.perf_counter_ns()

    def metrics(self, usage: Usage | None, timings: dict[str, float]) -> dict[str, int]:
        ttft_ms = timings.get("ttft_ms", 0.0)
        return {
            "total_duration": time.perf_counter_ns() - self.started_ns,
            "load_duration": max(0, self.loaded_ns - self.started_ns),
            "prompt_eval_count": usage.prompt_tokens if usage else 0,
            "prompt_eval_duration": max(0, round((ttft_ms - timings.get("queue_ms", 0.0)) * 1e6)),
            "eval_count": usage.completion_tokens if usage else 0,
            "eval_duration": max(0, round((timings.get("total_ms", ttft_ms) - ttft_ms) * 1e6)),
            **prediction_details(usage),  # extension: speculative drafts, only when the request drafted
        }


@dataclass
class Answer:
    """One chat or generate answer: its chunks' shape (`message` for chat, `response` for
    generate), the plan its text is parsed with, and what its last chunk reports."""

    http: HTTPRequest
    runtime: Runtime
    plan: ChatPlan
    model: str                        # as the client named it: Ollama echoes the request's name
    clock: Clock
    chat: bool
    want_logprobs: bool = False
    context: list[int] | None = None  # generate: the prompt's tokens, for the deprecated "context"

    def fragment(self, content: str = "", thinking: str = "", calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        if not self.chat:
            out: dict[str, Any] = {"response": content}
            if thinking:
                out["thinking"] = thinking
            return out
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = [tool_call_json(call.id, call.name, call.arguments, i)
                                     for i, call in enumerate(calls)]
        return {"message": message}

    def chunk(self, fragment: dict[str, Any], *, done: bool = False, created_at: str | None = None) -> dict[str, Any]:
        return {"model": self.model, "created_at": created_at or timestamp(), **fragment, "done": done}

    def _piece(self, piece: MessageDelta, logprobs: list[dict[str, Any]] | None = None) -> bytes:
        out = self.chunk(self.fragment(piece.content, piece.reasoning_content))
        if logprobs:
            out["logprobs"] = logprobs
        return line(out)

    async def _last(self, finish: str, text: str, usage: Usage | None, timings: dict[str, float],
                    fragment: dict[str, Any]) -> dict[str, Any]:
        out = {**self.chunk(fragment, done=True), "done_reason": finish, **self.clock.metrics(usage, timings)}
        if self.context is not None:  # Ollama tokenizes prompt + answer again too
            out["context"] = self.context + await tokenizer_call(len(text), self.runtime.tokenize, text,
                                                                 add_special=False)
        return out

    async def whole(self, first: Delta, deltas: DeltaStream) -> Response:
        done = await collect(self.http, first, deltas)
        finish = openai_finish_reason(done.finish_reason)
        message = finish_message(self.plan, done.text, finish)  # OutputValidationError -> 500, as on /v1
        out = await self._last(finish, done.text, done.usage, done.timings, self._message(message))
        if self.want_logprobs:
            out["logprobs"] = [_logprob_entry(self.runtime, lp) for lp in done.logprobs]
        return json_response(out)

    def _message(self, message: AssistantMessage) -> dict[str, Any]:
        return self.fragment(message.content or "", message.reasoning_content or "", message.tool_calls)

    def stream(self, first: Delta, deltas: DeltaStream) -> StreamingResponse:
        return ndjson_response(self._lines(first, deltas))

    async def _lines(self, first: Delta, deltas: DeltaStream) -> AsyncIterator[bytes]:
        streamer = MessageStreamer(self.plan.parser)
        # the running text may go out from the engine thread (server/direct.py), as on /v1
        if self.plan.parser.plain and not self.want_logprobs:
            DirectSSE.attach(self.http, deltas, lambda: _DirectLines(self, streamer))
        try:
            delta: Delta | None = first
            while delta is not None:
                if delta.error is not None:
                    yield error_line(delta.error)
                    return
                logprobs = ([_logprob_entry(self.runtime, lp) for lp in delta.logprobs]
                            if self.want_logprobs and delta.logprobs else None)
                pieces = [piece for piece in streamer.feed(delta.text) if piece.tool_call is None]
                if logprobs and not pieces:
                    yield self._piece(MessageDelta(), logprobs)
                for i, piece in enumerate(pieces):
                    yield self._piece(piece, logprobs if i == 0 else None)
                if delta.finish_reason is not None:
                    record(self.http, delta.timings, delta.usage)
                    finish = openai_finish_reason(delta.finish_reason)
                    last, message = streamer.finish()
                    for piece in last:
                        if piece.tool_call is None:
                            yield self._piece(piece)
                    try:
                        message = check_message(self.plan, message, finish)
                    except BotframeworkError as exc:  # structured output that does not validate
                        yield error_line(exc)
                        return
                    if message.tool_calls:  # whole, in one chunk, as Ollama sends them
                        yield line(self.chunk(self.fragment(calls=message.tool_calls)))
                    yield line(await self._last(finish, streamer.text, delta.usage, delta.timings,
                                                self.fragment()))
                    return
                delta = await anext(deltas, None)
        finally:
            await deltas.aclose()  # cancels the sequence if it is still running


class _DirectLines:
    """An answer's content lines for its text deltas on the engine thread (server/direct.py).
    A run of steps may send them itself (native()) while all the streamer does is hold
    trailing whitespace back: the same lines, except that those a run sends share the
    created_at of the run's start (a run is at most WorkerConfig.run_steps tokens) where
    lines sent one by one each take their own."""

    def __init__(self, answer: Answer, streamer: MessageStreamer) -> None:
        self.answer = answer
        self.streamer = streamer
        self.content_line: Callable[[str], bytes] = lambda text: line(answer.chunk(answer.fragment(text)))

    def __call__(self, text: str) -> bytes:
        return b"".join(self.content_line(piece.content) for piece in self.streamer.feed(text))

    def native(self) -> tuple[Any, ...] | None:
        pending = self.streamer.plain_pending()
        if pending is None:
            return None
        answer, created_at = self.answer, timestamp()
        return native_content(pending, text_template(
            lambda text: line(answer.chunk(answer.fragment(text), created_at=created_at))))
