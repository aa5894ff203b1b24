"""POST /v1/completions: a raw prompt continued, whole or streamed (text_completion chunks).

    prompt (string, [string] or token ids) -> tokens -> Request -> text (+ legacy logprobs)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response, StreamingResponse

from botframework.scheduler.output import Delta
from botframework.server.auth import require_api_key
from botframework.server.direct import DirectSSE
from botframework.server.errors import APIError
from botframework.server.generation import (
    StreamState,
    build_request,
    choice_requests,
    collect_all,
    get_runtime,
    json_response,
    new_id,
    openai_finish_reason,
    record,
    sse_choice,
    sse_choices,
    start_all,
    text_template,
    tokenizer_call,
    total_usage,
    usage_json,
)
from botframework.server.protocol import CompletionRequest
from botframework.server.routes.chat import SSE_HEADERS
from botframework.server.runtime import Runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, http: HTTPRequest) -> Response:
    runtime = get_runtime(http, body.model)
    body.check_supported()
    if body.suffix is not None:  # fill-in-the-middle: the prompt is the prefix
        prefix = body.prompt if isinstance(body.prompt, str) else None
        if prefix is None:
            raise APIError(400, "'suffix' needs 'prompt' to be a string", param="prompt")
        tokens = await asyncio.to_thread(runtime.infill_tokens, prefix, body.suffix)
    else:
        chars = sum(len(p) for p in body.prompt if isinstance(p, str)) if isinstance(body.prompt, list) \
            else len(body.prompt)
        tokens = await tokenizer_call(chars, _prompt_tokens, runtime, body.prompt)
    request_id = new_id("cmpl")
    settings = http.app.state.settings
    request = build_request(body, tokens, (), settings, runtime, request_id)
    started = await start_all(http, runtime, choice_requests(request, body.n, settings))
    created = int(time.time())
    want_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(http, runtime, request_id, created, started, include_usage,
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


def _prompt_tokens(runtime: Runtime, prompt: str | list[str] | list[int]) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < runtime.n_vocab]
        if bad:
            raise APIError(400, f"'prompt' token id {bad[0]} is out of the vocabulary (0..{runtime.n_vocab - 1})",
                           param="prompt")
        return ids
    text = prompt[0] if isinstance(prompt, list) and prompt else prompt
    if not isinstance(text, str) or not text:
        raise APIError(400, "'prompt' must not be empty", param="prompt")
    return runtime.tokenize(text, add_special=True)


def _stream(http: HTTPRequest, runtime: Runtime, request_id: str, created: int,
            started: list[tuple[Delta, AsyncIterator[Delta]]], include_usage: bool,
            want_logprobs: bool) -> AsyncIterator[bytes]:
    base = {"id": request_id, "object": "text_completion", "created": created, "model": runtime.model_id,
            "system_fingerprint": None}
    state = StreamState()
    streams = [_choice_stream(http, runtime, base, index, first, deltas, include_usage, want_logprobs, state,
                              single=len(started) == 1)
               for index, (first, deltas) in enumerate(started)]
    return sse_choices(started, streams, state, base, include_usage)


async def _choice_stream(http: HTTPRequest, runtime: Runtime, base: dict[str, Any], index: int, first: Delta,
                         deltas: AsyncIterator[Delta], include_usage: bool, want_logprobs: bool,
                         state: StreamState, single: bool) -> AsyncIterator[bytes]:
    """One choice's chunks. The only choice's running text may go out from the engine thread
    (server/direct.py): the same chunks, and this generator waits for the last delta meanwhile."""
    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return sse_choice(base, {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish},
                          include_usage)

    def direct_format() -> Callable[[str], bytes]:
        text_chunk = text_template(chunk)
        return lambda text: text_chunk(text) if text else b""

    if single and not want_logprobs:  # with logprobs, every delta would be declined
        DirectSSE.attach(http, deltas, direct_format)
    try:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
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
        await deltas.aclose()  # type: ignore[attr-defined]


def _legacy_logprobs(runtime: Runtime, entries: list[tuple[int, float, tuple[tuple[int, float], ...]]]
                     ) -> dict[str, Any]:
    def text(t: int) -> str:
        return runtime.token_bytes(t).decode("utf-8", "replace")

    return {"tokens": [text(t) for t, _, _ in entries], "token_logprobs": [p for _, p, _ in entries],
            "top_logprobs": [{text(t): p for t, p in top} for _, _, top in entries], "text_offset": []}
