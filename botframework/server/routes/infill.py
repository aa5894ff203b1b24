"""POST /infill: llama.cpp-compatible fill-in-the-middle for code editors (llama.vim, ...).

    input_extra (files) + input_prefix + prompt, input_suffix -> <PRE> .. <SUF> .. <MID> tokens
    -> {"content", "stop", "tokens_predicted", "tokens_evaluated", ...} or SSE {"content", "stop"}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse

from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta, FinishReason
from botframework.server.auth import require_api_key
from botframework.server.generation import collect, get_runtime, new_id, record, start
from botframework.server.protocol import InfillRequest
from botframework.server.sse import SSE_HEADERS, sse, sse_error
from botframework.server.validation import engine_request

router = APIRouter(dependencies=[Depends(require_api_key)])


def _extra_text(extra: list[dict[str, str]]) -> str:
    # llama.cpp's repo-level FIM layout: each file as "<filename>\n<text>\n" before the prefix.
    return "".join(f"{item.get('filename', '')}\n{item.get('text', '')}\n" for item in extra)


@router.post("/infill", response_model=None)
async def infill(body: InfillRequest, http: HTTPRequest) -> dict[str, Any] | StreamingResponse:
    runtime = await get_runtime(http, body.model or None)
    body.check_supported()
    tokens = await asyncio.to_thread(runtime.infill_tokens, body.input_prefix + body.prompt, body.input_suffix,
                                     _extra_text(body.input_extra))
    request = engine_request(body, tokens, runtime, http.app.state.settings, new_id("infill"))
    first, deltas = await start(http, runtime, request)
    if body.stream:
        return StreamingResponse(_stream(http, first, deltas), media_type="text/event-stream", headers=SSE_HEADERS)
    done = await collect(http, first, deltas)
    usage = done.usage
    return {"content": done.text, "stop": True, "model": runtime.model_id,
            "stop_type": "limit" if done.finish_reason is FinishReason.LENGTH else "eos",
            "tokens_predicted": usage.completion_tokens if usage else 0,
            "tokens_evaluated": usage.prompt_tokens if usage else 0}


async def _stream(http: HTTPRequest, first: Delta, deltas: DeltaStream) -> AsyncIterator[bytes]:
    try:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                yield sse_error(delta.error)
                break
            done = delta.finish_reason is not None
            if delta.text or done:
                yield sse({"content": delta.text, "stop": done})
            if done:
                record(http, delta.timings, delta.usage)
                break
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()
