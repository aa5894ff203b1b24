"""POST /v1/chat/completions, whole or streamed as OpenAI's server-sent events.

    body -> validation.chat_options: ChatOptions (response_format / tools + tool_choice /
            grammar, checked: 400 lists what cannot be enforced) -> runtime.plan_chat: chat
            template (llama.cpp Jinja) -> tokens + grammar + output parser
         -> validation.engine_request (runtime.requests.build_request) -> Request
    whole:   text -> finish_message: content / reasoning_content / tool_calls; structured
             output that ended with "stop" is validated (500 if it does not, never returned)
    stream:  role chunk, then per engine delta MessageStreamer pieces: content,
             reasoning_content, tool calls (id and name first, then argument fragments);
             finish chunk, [usage chunk], [DONE]
             an engine error or a failed validation mid-stream -> an error event, then [DONE]
             the client goes away -> the generator is closed -> the sequence is cancelled
    n > 1:   one engine request per choice (generation.choice_requests), batched like any
             others; their chunks interleave in one stream, each with its choice index
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from botframework.chat.message import AssistantMessage, MessageDelta
from botframework.chat.plan import ChatPlan, check_message, finish_message
from botframework.chat.stream import MessageStreamer
from botframework.errors import BotframeworkError, ShuttingDownError
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta
from botframework.server.auth import require_api_key
from botframework.server.direct import DirectSSE
from botframework.server.generation import (
    choice_requests,
    collect_all,
    get_runtime,
    new_id,
    openai_finish_reason,
    record,
    start_all,
)
from botframework.server.protocol import ChatCompletionRequest
from botframework.server.runtime import Runtime
from botframework.server.sse import (
    SSE_HEADERS,
    EventStreamResponse,
    Started,
    StreamState,
    json_response,
    native_content,
    sse_choice,
    sse_choices,
    text_template,
    total_usage,
    usage_json,
)
from botframework.server.validation import (
    chat_options,
    engine_request,
    generation_options,
)

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, http: HTTPRequest) -> Response:
    runtime = await get_runtime(http, body.model)
    settings = http.app.state.settings
    body.check_supported()
    constraints = chat_options(body)
    options = generation_options(body)
    messages = [m.to_template() for m in body.messages]
    plan = await asyncio.to_thread(runtime.plan_chat, messages, constraints, max_tokens=options.planned_max_tokens,
                                   overflow=body.overflow)
    request_id = new_id("chatcmpl")
    request = engine_request(body, plan.tokens, runtime, settings, request_id, options=options,
                             extra_stops=plan.rendered.additional_stops, grammar=plan.grammar,
                             truncated_tokens=plan.rendered.truncated_tokens)
    started = await start_all(http, runtime, choice_requests(request, body.n, settings))
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(_stream(http, runtime, plan, request_id, created, started, include_usage,
                                         body.logprobs),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    choices = []
    collected = await collect_all(http, started)
    for index, done in enumerate(collected):
        finish = openai_finish_reason(done.finish_reason)
        message = finish_message(plan, done.text, finish)  # OutputValidationError -> 500, never invalid JSON
        logprobs = {"content": [_logprob_entry(runtime, lp) for lp in done.logprobs]} if body.logprobs else None
        choices.append({"index": index, "message": message.to_openai(), "logprobs": logprobs,
                        "finish_reason": _finish_reason(finish, message)})
    return json_response({
        "id": request_id, "object": "chat.completion", "created": created, "model": runtime.model_id,
        "system_fingerprint": None, "choices": choices,
        "usage": usage_json(total_usage([done.usage for done in collected])),
    })


def _finish_reason(finish: str, message: AssistantMessage) -> str:
    return "tool_calls" if finish == "stop" and message.tool_calls else finish


def _delta_json(piece: MessageDelta) -> dict[str, Any]:
    if piece.tool_call is not None:
        return {"tool_calls": [piece.tool_call.to_openai()]}
    if piece.reasoning_content:
        return {"reasoning_content": piece.reasoning_content}
    return {"content": piece.content}


class _DirectMessage:
    """The only choice's chunks for its text deltas on the engine thread (server/direct.py):
    what its MessageStreamer makes of them. A run of steps may send the content itself
    (native()) while all the streamer does is hold trailing whitespace back
    (MessageStreamer.plain_pending), with the same bytes."""

    def __init__(self, streamer: MessageStreamer, chunk: Callable[[dict[str, Any]], bytes]) -> None:
        self.streamer = streamer
        self.chunk = chunk
        self.content_chunk = text_template(lambda text: chunk({"content": text}))

    def __call__(self, text: str) -> bytes:
        return b"".join(self._piece_chunk(piece) for piece in self.streamer.feed(text))

    def _piece_chunk(self, piece: MessageDelta) -> bytes:
        body = _delta_json(piece)
        return self.content_chunk(piece.content) if "content" in body else self.chunk(body)  # type: ignore[arg-type]

    def native(self) -> tuple[Any, ...] | None:
        """(head, tail, rstrip, the whitespace held) for a NativeStream, or None."""
        return native_content(self.streamer.plain_pending(), self.content_chunk)


def _stream(http: HTTPRequest, runtime: Runtime, plan: ChatPlan, request_id: str, created: int,
            started: Started, include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": runtime.model_id,
            "system_fingerprint": None}
    state = StreamState()
    streams = [_choice_stream(http, runtime, plan, base, index, first, deltas, include_usage, want_logprobs, state,
                              single=len(started) == 1)
               for index, (first, deltas) in enumerate(started)]
    return sse_choices(started, streams, state, base, include_usage)


async def _choice_stream(http: HTTPRequest, runtime: Runtime, plan: ChatPlan, base: dict[str, Any], index: int,
                         first: Delta, deltas: DeltaStream, include_usage: bool, want_logprobs: bool,
                         state: StreamState, single: bool) -> AsyncIterator[bytes]:
    """One choice's chunks: role, pieces, finish (an error event instead if it fails). The only
    choice's running content may go out from the engine thread (server/direct.py): the same
    chunks, and this generator waits for the last delta meanwhile."""
    streamer = MessageStreamer(plan.parser)

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return sse_choice(base, {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish},
                          include_usage)

    def direct_format() -> Callable[[str], bytes]:
        return _DirectMessage(streamer, chunk)

    # not with a parser (it would run on the engine thread) nor logprobs (every delta has some)
    if single and plan.parser.plain and not want_logprobs:
        DirectSSE.attach(http, deltas, direct_format)
    try:
        yield chunk({"role": "assistant", "content": ""})
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                if isinstance(delta.error, ShuttingDownError):  # the drain ended it: a last chunk says so
                    yield chunk({}, "length")
                state.fail(delta.error)
                return
            logprobs = ({"content": [_logprob_entry(runtime, lp) for lp in delta.logprobs]}
                        if want_logprobs and delta.logprobs else None)
            pieces = streamer.feed(delta.text)
            if logprobs is not None and not pieces:
                yield chunk({"content": ""}, logprobs=logprobs)
            for i, piece in enumerate(pieces):
                yield chunk(_delta_json(piece), logprobs=logprobs if i == 0 else None)
            if delta.finish_reason is not None:
                record(http, delta.timings, delta.usage)
                finish = openai_finish_reason(delta.finish_reason)
                last, message = streamer.finish()
                for piece in last:
                    yield chunk(_delta_json(piece))
                try:
                    check_message(plan, message, finish)
                except BotframeworkError as exc:  # structured output that does not validate
                    state.fail(exc)
                    return
                state.usages.append(delta.usage)
                yield chunk({}, _finish_reason(finish, message))
                return
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()  # cancels the sequence if it is still running


def _logprob_entry(runtime: Runtime, lp: tuple[int, float, tuple[tuple[int, float], ...]]) -> dict[str, Any]:
    token, logprob, top = lp

    def one(t: int, p: float) -> dict[str, Any]:
        raw = runtime.token_bytes(t)
        return {"token": raw.decode("utf-8", "replace"), "logprob": p, "bytes": list(raw)}

    return {**one(token, logprob), "top_logprobs": [one(t, p) for t, p in top]}
