"""POST /v1/completions: a raw prompt continued, whole or streamed (text_completion chunks).

    prompt (string, [string] or token ids) -> tokens -> validation.engine_request -> Request
      -> text (+ legacy logprobs)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from botframework.errors import ShuttingDownError
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
    tokenizer_call,
)
from botframework.server.protocol import CompletionRequest
from botframework.server.runtime import Runtime
from botframework.server.sse import (
    SSE_HEADERS,
    DirectText,
    EventStreamResponse,
    Started,
    StreamState,
    json_response,
    sse_choice,
    sse_choices,
    total_usage,
    usage_json,
)
from botframework.server.validation import completion_prompt, engine_request

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, http: HTTPRequest) -> Response:
    runtime = await get_runtime(http, body.model)
    body.check_supported()
    prompt = completion_prompt(body)
    if isinstance(prompt, list):  # token ids (never with a suffix)
        tokens = prompt
    elif body.suffix is not None:  # fill-in-the-middle: the prompt is the prefix
        tokens = await asyncio.to_thread(runtime.infill_tokens, prompt, body.suffix)
    else:
        tokens = await tokenizer_call(len(prompt), runtime.tokenize, prompt, add_special=True)
    request_id = new_id("cmpl")
    settings = http.app.state.settings
    request = engine_request(body, tokens, runtime, settings, request_id)
    started = await start_all(http, runtime, choice_requests(request, body.n, settings))
    created = int(time.time())
    want_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(_stream(http, runtime, request_id, created, started, include_usage,
                                         want_logprobs),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    collected = await collect_all(http, started)
    return json_response({
        "id": request_id, "object": "text_completion", "created": created, "model": runtime.model_id,
        "system_fingerprint": None,
        "choices": [{"index": index, "text": done.text,
                     "logprobs": _legacy_logprobs(runtime, done.logprobs) if want_logprobs else None,
                     "finish_reason": openai_finish_reason(done.finish_reason)}
                    for index, done in enumerate(collected)],
        "usage": usage_json(total_usage([done.usage for done in collected])),
    })


def _stream(http: HTTPRequest, runtime: Runtime, request_id: str, created: int, started: Started,
            include_usage: bool, want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": request_id, "object": "text_completion", "created": created, "model": runtime.model_id,
            "system_fingerprint": None}
    state = StreamState()
    streams = [_choice_stream(http, runtime, base, index, first, deltas, include_usage, want_logprobs, state,
                              single=len(started) == 1)
               for index, (first, deltas) in enumerate(started)]
    return sse_choices(started, streams, state, base, include_usage)


async def _choice_stream(http: HTTPRequest, runtime: Runtime, base: dict[str, Any], index: int, first: Delta,
                         deltas: DeltaStream, include_usage: bool, want_logprobs: bool,
                         state: StreamState, single: bool) -> AsyncIterator[bytes]:
    """One choice's chunks. The only choice's running text may go out from the engine thread
    (server/direct.py): the same chunks, and this generator waits for the last delta meanwhile."""
    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return sse_choice(base, {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish},
                          include_usage)

    def direct_format() -> Callable[[str], bytes]:
        return DirectText(chunk)

    if single and not want_logprobs:  # with logprobs, every delta would be declined
        DirectSSE.attach(http, deltas, direct_format)
    try:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                if isinstance(delta.error, ShuttingDownError):  # the drain ended it: a last chunk says so
                    yield chunk("", "length")
                state.fail(delta.error)
                return
            logprobs = _legacy_logprobs(runtime, list(delta.logprobs)) if want_logprobs and delta.logprobs else None
            finish = openai_finish_reason(delta.finish_reason) if delta.finish_reason is not None else None
            if delta.text or logprobs or finish:
                yield chunk(delta.text, finish, logprobs)
            if finish is not None:
                record(http, delta.timings, delta.usage)
                state.usages.append(delta.usage)
                return
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()


def _legacy_logprobs(runtime: Runtime, entries: list[tuple[int, float, tuple[tuple[int, float], ...]]]
                     ) -> dict[str, Any]:
    def text(t: int) -> str:
        return runtime.token_bytes(t).decode("utf-8", "replace")

    return {"tokens": [text(t) for t, _, _ in entries], "token_logprobs": [p for _, p, _ in entries],
            "top_logprobs": [{text(t): p for t, p in top} for _, _, top in entries], "text_offset": []}
