"""POST /v1/chat/completions, whole or streamed as OpenAI's server-sent events.

    messages -> chat template (llama.cpp Jinja) -> tokens (+ template stops) -> Request
    stream:  role chunk, content chunks, finish chunk, [usage chunk], [DONE]
             an engine error mid-stream -> an error event, then [DONE]
             the client goes away -> the generator is closed -> the sequence is cancelled
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse

from botframework.scheduler.output import Delta
from botframework.server.auth import require_api_key
from botframework.server.errors import error_body, to_api_error
from botframework.server.generation import (
    build_request,
    collect,
    get_runtime,
    new_id,
    openai_finish_reason,
    record,
    sse,
    start,
    usage_json,
)
from botframework.server.protocol import ChatCompletionRequest
from botframework.server.runtime import Runtime

router = APIRouter(dependencies=[Depends(require_api_key)])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, http: HTTPRequest) -> dict[str, Any] | StreamingResponse:
    runtime = get_runtime(http, body.model)
    settings = http.app.state.settings
    body.check_supported()
    messages = [{"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
                for m in body.messages]
    tokens, extra_stops, truncated = await asyncio.to_thread(
        runtime.render_chat, messages, max_tokens=body.requested_max_tokens or 256, overflow=body.overflow)
    request_id = new_id("chatcmpl")
    request = build_request(body, tokens, extra_stops, settings, runtime, request_id, truncated_tokens=truncated)
    first, deltas = await start(http, runtime, request)
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(http, runtime, request_id, created, first, deltas, include_usage,
                                         body.logprobs),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    done = await collect(http, first, deltas)
    logprobs = {"content": [_logprob_entry(runtime, lp) for lp in done.logprobs]} if body.logprobs else None
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": runtime.model_id,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text, "refusal": None},
                     "logprobs": logprobs, "finish_reason": openai_finish_reason(done.finish_reason)}],
        "usage": usage_json(done.usage),
    }


async def _stream(http: HTTPRequest, runtime: Runtime, request_id: str, created: int, first: Delta,
                  deltas: AsyncIterator[Delta], include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": runtime.model_id,
            "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        payload: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                                        "finish_reason": finish}]}
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    try:
        yield chunk({"role": "assistant", "content": ""})
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                err = to_api_error(delta.error)
                yield sse(error_body(err.message, err.type, err.param, err.code))
                break
            logprobs = ({"content": [_logprob_entry(runtime, lp) for lp in delta.logprobs]}
                        if want_logprobs and delta.logprobs else None)
            if delta.text or logprobs:
                yield chunk({"content": delta.text}, logprobs=logprobs)
            if delta.finish_reason is not None:
                record(http, delta.timings, delta.usage)
                yield chunk({}, openai_finish_reason(delta.finish_reason))
                if include_usage:
                    yield sse({**base, "choices": [], "usage": usage_json(delta.usage)})
                break
            delta = await anext(deltas, None)
        yield sse("[DONE]")
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]  # cancels the sequence if it is still running


def _logprob_entry(runtime: Runtime, lp: tuple[int, float, tuple[tuple[int, float], ...]]) -> dict[str, Any]:
    token, logprob, top = lp

    def one(t: int, p: float) -> dict[str, Any]:
        raw = runtime.token_bytes(t)
        return {"token": raw.decode("utf-8", "replace"), "logprob": p, "bytes": list(raw)}

    return {**one(token, logprob), "top_logprobs": [one(t, p) for t, p in top]}
