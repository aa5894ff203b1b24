"""Anthropic's Messages API: POST /v1/messages and POST /v1/messages/count_tokens.

    body (_anthropic_protocol: pydantic, unknown fields refused)
      --chat_messages / chat_options / generation_options--> template messages, ChatOptions,
        GenerationOptions --runtime.plan_chat--> ChatPlan --build_request--> Request
      --generation.start--> the same scheduler, slots, sessions, limits and metrics as
        /v1/chat/completions (a client that goes away cancels the request and frees its slot)
    whole:  generation.collect -> finish_message -> {"type": "message", content blocks,
            stop_reason, stop_sequence, usage}
    stream: message_start, [content_block_start, ping, content_block_delta..., content_block_stop]...,
            message_delta (stop_reason, stop_sequence, usage), message_stop; a failure after the
            start is an `error` event. Plain text may go out from the engine thread (server/direct.py).
    errors: every failure of these routes, body validation and auth included, in Anthropic's
            shape (_anthropic_render.error_status), never FastAPI's own 422 / OpenAI's shape.

stop_reason: end_turn, max_tokens (max_tokens or the context end), tool_use (the answer has
tool calls), stop_sequence with the one matched: the engine ends on a stop string without saying
which, so the answer's tokens are detokenized again and the first stop in them is the one (no
other could be in them: generation ends at the first). Auth: the server's API key as x-api-key
(or Bearer); anthropic-version is accepted, not required.

Accepted with no effect here: metadata, cache_control (prefix caching is automatic: usage
reports it as cache_read_input_tokens), service_tier, speed, inference_geo, diagnostics,
output_config.effort, thinking (a reasoning model's thinking comes back as thinking blocks with
an empty signature, as its template produces it). Refused with a 400 naming them: images and
documents, server tools, and a final assistant turn (prefill). Extension: session_id, as on
/v1/chat/completions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from botframework.chat.message import AssistantMessage
from botframework.chat.plan import ChatPlan, check_message, finish_message
from botframework.chat.stream import MessageStreamer
from botframework.errors import BotframeworkError, ContextLengthExceededError
from botframework.runtime.requests import build_request
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta
from botframework.server.adapters._anthropic_protocol import (
    PARAM_NAMES,
    CountTokensRequest,
    MessagesRequest,
    chat_messages,
    chat_options,
    check_last_turn,
    generation_options,
)
from botframework.server.adapters._anthropic_render import (
    ContentBlocks,
    content_json,
    error_event,
    error_status,
    event,
    message_json,
    usage_json,
)
from botframework.server.auth import require_api_key
from botframework.server.direct import DirectSSE
from botframework.server.generation import (
    collect,
    get_runtime,
    openai_finish_reason,
    record,
    start,
    tokenizer_call,
)
from botframework.server.runtime import Runtime
from botframework.server.sse import SSE_HEADERS, EventStreamResponse, json_response, native_content


class AnthropicRoute(APIRoute):
    """A route whose every failure (body validation, auth, unknown model, busy, ...) is answered
    in Anthropic's error shape: the app's handlers answer in OpenAI's."""

    def get_route_handler(self) -> Callable[[HTTPRequest], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: HTTPRequest) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - each one is mapped; unknown ones are a logged 500
                status, body, headers = error_status(exc)
                return JSONResponse(body, status_code=status, headers=headers)

        return route


router = APIRouter(route_class=AnthropicRoute)
_AUTH = [Depends(require_api_key)]  # per route: the 405s below answer without a key
_OTHER_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY"]  # what schemathesis tries


@router.api_route("/v1/messages", methods=_OTHER_METHODS, include_in_schema=False)
@router.api_route("/v1/messages/count_tokens", methods=_OTHER_METHODS, include_in_schema=False)
async def method_not_allowed() -> Response:
    """Other methods: Starlette's 405, in Anthropic's shape like every answer of these paths (a
    CORS preflight, when CORS is on, is answered by its middleware before any route)."""
    raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})


@router.post("/v1/messages", response_model=None, dependencies=_AUTH)
async def messages(body: MessagesRequest, http: HTTPRequest) -> Response:
    runtime = await get_runtime(http, body.model)
    check_last_turn(body)
    options = generation_options(body)
    plan = await asyncio.to_thread(runtime.plan_chat, chat_messages(body), chat_options(body),
                                   max_tokens=options.planned_max_tokens)
    message_id = f"msg_{uuid.uuid4().hex[:24]}"  # also the engine request's id (POST /v1/cancel/{id})
    request = build_request(options, plan.tokens, request_id=message_id, n_ctx=runtime.n_ctx,
                            n_vocab=runtime.n_vocab, limits=http.app.state.settings.request_limits,
                            extra_stops=plan.rendered.additional_stops, grammar=plan.grammar,
                            truncated_tokens=plan.rendered.truncated_tokens, param_names=PARAM_NAMES,
                            stream=bool(body.stream))
    first, deltas = await start(http, runtime, request)
    if body.stream:
        return EventStreamResponse(_events(http, runtime, plan, body, message_id, first, deltas),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    done = await collect(http, first, deltas)
    finish = openai_finish_reason(done.finish_reason)
    message = finish_message(plan, done.text, finish)  # OutputValidationError -> 500, never invalid JSON
    stop_reason, stop_sequence = await _stop_reason(runtime, body.stop_sequences, finish, message, done.token_ids)
    return json_response(message_json(message_id, runtime.model_id, content_json(message), stop_reason,
                                      stop_sequence, usage_json(done.usage)))


@router.post("/v1/messages/count_tokens", response_model=None, dependencies=_AUTH)
async def count_tokens(body: CountTokensRequest, http: HTTPRequest) -> Response:
    """The prompt's tokens as the chat template renders it, tools included; a prompt too long
    for the context is still counted."""
    runtime = await get_runtime(http, body.model)
    try:
        plan = await asyncio.to_thread(runtime.plan_chat, chat_messages(body), chat_options(body))
        num_tokens = len(plan.tokens)
    except ContextLengthExceededError as exc:
        num_tokens = exc.num_prompt_tokens
    return json_response({"input_tokens": num_tokens})


async def _stop_reason(runtime: Runtime, stops: Sequence[str] | None, finish: str, message: AssistantMessage,
                       token_ids: Sequence[int]) -> tuple[str, str | None]:
    if finish == "length":
        return "max_tokens", None
    if message.tool_calls:
        return "tool_use", None
    if stops and token_ids:
        # the first stop in the answer's text, the one the engine's StopMatcher ended on:
        # earliest end first, the longer of two that end together
        text = await tokenizer_call(4 * len(token_ids), runtime.detokenize, list(token_ids))
        found = [(i + len(stop), i, stop) for stop in stops if (i := text.find(stop)) != -1]
        if found:
            return "stop_sequence", min(found)[2]
    return "end_turn", None


class _DirectBlocks:
    """The stream's events for its text deltas on the engine thread (server/direct.py). A run of
    steps may send the text itself (native()) while a text block is open and all the streamer
    does is hold trailing whitespace back: the same content_block_delta events."""

    def __init__(self, streamer: MessageStreamer, blocks: ContentBlocks) -> None:
        self.streamer = streamer
        self.blocks = blocks

    def __call__(self, text: str) -> bytes:
        return self.blocks.feed(self.streamer.feed(text))

    def native(self) -> tuple[Any, ...] | None:
        return native_content(self.streamer.plain_pending(), self.blocks.open_text())


async def _events(http: HTTPRequest, runtime: Runtime, plan: ChatPlan, body: MessagesRequest, message_id: str,
                  first: Delta, deltas: DeltaStream) -> AsyncIterator[bytes]:
    """The stream's events (see the module docstring); closing it cancels the request."""
    streamer = MessageStreamer(plan.parser)
    blocks = ContentBlocks()
    token_ids: list[int] = []
    # the engine thread may send plain text itself; not with stop_sequences (their check needs
    # every token id) nor with a parser (it would run on the engine thread)
    if plan.parser.plain and not body.stop_sequences:
        DirectSSE.attach(http, deltas, lambda: _DirectBlocks(streamer, blocks))
    try:
        yield event("message_start", {"type": "message_start", "message": message_json(
            message_id, runtime.model_id, [], None, None, usage_json(None, len(plan.tokens)))})
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                yield error_event(delta.error)
                return
            token_ids += delta.token_ids
            out = blocks.feed(streamer.feed(delta.text))
            if out:
                yield out
            if delta.finish_reason is not None:
                record(http, delta.timings, delta.usage)
                finish = openai_finish_reason(delta.finish_reason)
                last, message = streamer.finish()
                yield blocks.feed(last) + blocks.close()
                try:
                    check_message(plan, message, finish)
                except BotframeworkError as exc:  # structured output that does not validate
                    yield error_event(exc)
                    return
                stop_reason, stop_sequence = await _stop_reason(runtime, body.stop_sequences, finish, message,
                                                                token_ids)
                yield event("message_delta", {"type": "message_delta",
                                              "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                              "usage": usage_json(delta.usage)})
                yield event("message_stop", {"type": "message_stop"})
                return
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()  # cancels the sequence if it is still running
