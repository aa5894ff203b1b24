"""OpenAI's Responses API on the chat core: POST /v1/responses, GET / DELETE /v1/responses/{id},
POST /v1/responses/{id}/cancel.

    body --check_supported--> the previous response's conversation (previous_response_id)
         + input items --chat_messages--> messages (instructions first, as a system turn)
         --ChatOptions (text.format -> structured output; tools + tool_choice) and
           GenerationOptions (max_output_tokens, temperature, ...; the chain's session_id),
           both made by _responses_request
         --runtime.plan_chat--> ChatPlan --build_request--> Request: /v1/chat/completions' path
    whole:   generation.start + collect --finish_message--> AssistantMessage --message_pieces
             --OutputBuilder--> output items --> the Response object
    stream:  response.created, response.in_progress; per engine delta MessageStreamer pieces
             --OutputBuilder--> output_item.added / content_part.added / *.delta events; at the
             end the *.done events and response.completed | response.incomplete (max tokens,
             or cancelled) | error + response.failed; every event has its sequence_number
             the client goes away -> the generator is closed -> the sequence is cancelled
    store:   (store: true, the default) the finished response and its conversation are kept in
             a bounded LRU in memory (_responses_store), its KV state in the model under the
             chain's session id: a turn with previous_response_id prefills only its new tokens
             (usage.input_tokens_details.cached_tokens). DELETE, or eviction, frees the session
             once no stored or running response of the chain uses it.
    cancel:  a running response (streamed: its id came in response.created) is stopped as
             POST /v1/cancel/{id} stops any request; the answer is the response as it ended.

Errors from the core are named as this protocol names the fields (text.format, input,
max_output_tokens); everything else about errors is server/errors.py's one mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from pydantic import TypeAdapter

from botframework.chat.plan import ChatPlan, check_message, finish_message
from botframework.chat.stream import MessageStreamer
from botframework.errors import BotframeworkError, InvalidRequestError
from botframework.runtime.requests import build_request
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta, FinishReason, Usage
from botframework.scheduler.sequence import Request
from botframework.server.adapters import _responses_store
from botframework.server.adapters._responses_items import (
    Event,
    OutputBuilder,
    chat_messages,
    message_pieces,
    new_item_id,
)
from botframework.server.adapters._responses_protocol import InputItem, ResponsesRequest
from botframework.server.adapters._responses_request import (
    OPTION_NAMES,
    chat_options,
    check_reasoning,
    generation_options,
    input_messages,
    named_as_responses,
    previous_response,
)
from botframework.server.adapters._responses_store import ResponseStore, Running, Stored
from botframework.server.auth import require_api_key
from botframework.server.direct import DirectSSE
from botframework.server.errors import APIError, to_api_error, unsupported
from botframework.server.generation import collect, get_runtime, record, start, tokenizer_call
from botframework.server.routes.cancel import cancel as cancel_request
from botframework.server.routes.sessions import delete_session
from botframework.server.runtime import Runtime
from botframework.server.sse import (
    SSE_HEADERS,
    EventStreamResponse,
    NumberedTemplate,
    json_response,
    native_content,
    numbered_template,
    prediction_details,
    sse,
)

router = APIRouter(dependencies=[Depends(require_api_key)])

CANCEL_WAIT_S = 10.0  # how long POST .../cancel waits for the response to end before answering

_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])

# how an engine request ended -> (response status, its items' status, the closing event)
_ENDINGS = {
    FinishReason.STOP: ("completed", "completed", "response.completed"),
    FinishReason.LENGTH: ("incomplete", "incomplete", "response.incomplete"),
    FinishReason.CANCELLED: ("cancelled", "incomplete", "response.incomplete"),
}


def _store(http: HTTPRequest) -> ResponseStore:
    store: ResponseStore | None = getattr(http.app.state, "responses_store", None)
    if store is None:
        limits = _responses_store  # read now, so that a test can lower them
        store = http.app.state.responses_store = ResponseStore(limits.MAX_STORED_RESPONSES, limits.MAX_STORED_BYTES)
    return store


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", type="not_found_error",
                    param="response_id", code="response_not_found")



# -- the Response object ---------------------------------------------------------------------

@dataclass
class _Turn:
    """One response: what it echoes of its request, and the conversation it continues."""

    response_id: str
    body: ResponsesRequest
    model_id: str
    request: Request
    conversation: list[dict[str, Any]]  # previous turns + this input (no instructions)
    session_id: str | None
    created_at: int = field(default_factory=lambda: int(time.time()))

    def snapshot(self, status: str, output: list[dict[str, Any]] | None = None,
                 usage: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.body
        sampler = self.request.params.sampler
        fmt = body.text.format.to_json() if body.text is not None and body.text.format is not None else None
        choice: Any = body.tool_choice
        if choice is not None and not isinstance(choice, str):
            choice = choice.model_dump(exclude_none=True)
        reasoning = body.reasoning
        return {
            "id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "max_tool_calls": None,
            "model": self.model_id, "output": output or [],
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": reasoning.effort if reasoning else None,
                          "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None},
            "service_tier": "flex" if body.service_tier == "flex" else "default", "store": body.stored,
            "temperature": sampler.temperature, "text": {"format": fmt or {"type": "text"}, "verbosity": "medium"},
            "tool_choice": choice or "auto",
            "tools": [tool.model_dump(by_alias=True, exclude_none=True) for tool in body.tools or ()],
            "top_p": sampler.top_p, "top_logprobs": 0, "truncation": body.truncation or "disabled",
            "usage": usage, "user": body.user, "metadata": body.metadata or {},
            "completed_at": int(time.time()) if status == "completed" else None,
        }

    def usage(self, usage: Usage | None, reasoning_tokens: int) -> dict[str, Any] | None:
        if usage is None:
            return None
        kept = usage.prompt_tokens - usage.cached_tokens if self.session_id is not None else 0
        out: dict[str, Any] = {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": kept},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, usage.completion_tokens),
                                      **prediction_details(usage)},  # extension: speculative drafts
            "total_tokens": usage.total_tokens}
        if usage.truncated_tokens:
            out["truncated_tokens"] = usage.truncated_tokens  # extension: dropped by truncation "auto"
        return out


async def _reasoning_tokens(runtime: Runtime, builder: OutputBuilder) -> int:
    """Output tokens spent reasoning: the reasoning text tokenized again (close, not exact)."""
    text = builder.reasoning_text
    if not text:
        return 0
    return len(await tokenizer_call(len(text), runtime.tokenize, text, add_special=False))


def _failed(turn: _Turn, builder: OutputBuilder, exc: BaseException) -> tuple[Event, dict[str, Any]]:
    """The error event and the failed Response for an error after the stream began."""
    err = to_api_error(exc)
    event = {"type": "error", "code": err.code, "message": err.message, "param": err.param}
    return event, turn.snapshot("failed", builder.items("incomplete"),
                                error={"code": "server_error", "message": err.message})


def _keep(http: HTTPRequest, store: ResponseStore, turn: _Turn, final: dict[str, Any] | None) -> None:
    """The response has ended: keep it (store: true) with its conversation, wake a cancel
    waiting for it, and drop the sessions nothing uses any more."""
    freed: list[str] = []
    if final is not None and turn.body.stored:
        output = _ITEMS.validate_python(final["output"])
        freed += store.put(turn.response_id, Stored(final, turn.conversation + chat_messages(output, "output"),
                                                    turn.session_id))
    freed += store.end(turn.response_id, final)
    _drop_later(http, store, freed)


async def _drop_sessions(http: HTTPRequest, session_ids: list[str]) -> None:
    for session_id in session_ids:
        with contextlib.suppress(APIError):  # 404: nothing was kept under it
            await delete_session(session_id, http)


def _drop_later(http: HTTPRequest, store: ResponseStore, session_ids: list[str]) -> None:
    if session_ids:
        task = asyncio.ensure_future(_drop_sessions(http, session_ids))
        store.tasks.add(task)
        task.add_done_callback(store.tasks.discard)


# -- routes ----------------------------------------------------------------------------------

@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponsesRequest, http: HTTPRequest) -> Response:
    runtime = await get_runtime(http, body.model)
    body.check_supported()
    store = _store(http)
    previous = previous_response(store, body.previous_response_id)
    session_id = previous.session_id if previous is not None else None
    if session_id is None and body.stored:
        session_id = new_item_id("respsession")
    response_id = new_item_id("resp")
    with named_as_responses():
        conversation = (previous.messages if previous is not None else []) + input_messages(body)
        messages = ([{"role": "system", "content": body.instructions}] if body.instructions else []) + conversation
        options = generation_options(body, session_id)
        plan = await asyncio.to_thread(runtime.plan_chat, messages, chat_options(body),
                                       max_tokens=options.planned_max_tokens,
                                       overflow="truncate" if body.truncation == "auto" else "error")
        check_reasoning(body, plan, runtime)
        request = build_request(options, plan.tokens, request_id=response_id, n_ctx=runtime.n_ctx,
                                n_vocab=runtime.n_vocab, limits=http.app.state.settings.request_limits,
                                extra_stops=plan.rendered.additional_stops, grammar=plan.grammar,
                                truncated_tokens=plan.rendered.truncated_tokens, param_names=OPTION_NAMES,
                                stream=bool(body.stream))
    turn = _Turn(response_id, body, runtime.model_id, request, conversation, session_id)
    store.start(response_id, Running(turn.snapshot("in_progress"), session_id, store=body.stored))
    try:
        first, deltas = await start(http, runtime, request)
    except BaseException:
        _keep(http, store, turn, None)
        raise
    if body.stream:
        events = _stream(http, runtime, plan, turn, store, first, deltas)
        # a stream that is never iterated (the client left at once) still ends its running entry
        weakref.finalize(events, store.end, response_id)
        return EventStreamResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    final = None
    try:
        final = await _whole(http, runtime, plan, turn, first, deltas)
    finally:
        _keep(http, store, turn, final)
    return json_response(final)


async def _whole(http: HTTPRequest, runtime: Runtime, plan: ChatPlan, turn: _Turn, first: Delta,
                 deltas: DeltaStream) -> dict[str, Any]:
    """The finished Response of a non-streamed request (a disconnect cancels it: 499)."""
    done = await collect(http, first, deltas)
    reason = done.finish_reason or FinishReason.CANCELLED
    status, item_status, _ = _ENDINGS.get(reason, _ENDINGS[FinishReason.CANCELLED])
    message = finish_message(plan, done.text, "stop" if reason is FinishReason.STOP else "length")
    builder = OutputBuilder()
    for piece in message_pieces(message):  # the pieces a stream of it would have had
        builder.feed(piece)
    builder.finish(item_status)
    usage = turn.usage(done.usage, await _reasoning_tokens(runtime, builder))
    return turn.snapshot(status, builder.items(item_status), usage)


class _Events:
    """A stream's events as bytes, numbered in order (every event has its sequence_number)."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, payload: Event) -> bytes:
        number, self.next = self.next, self.next + 1
        return self.frame(payload, number)

    @staticmethod
    def frame(payload: Event, number: int) -> bytes:
        payload["sequence_number"] = number
        return b"event: " + payload["type"].encode() + b"\n" + sse(payload)


class _DirectEvents:
    """The stream's events for its text deltas on the engine thread (server/direct.py): the
    same events, numbered from the same counter, as the route's generator would yield; it waits
    for the next delta meanwhile, so the two never use the streamer, builder or counter at once.
    A run of steps may send the text itself (native()) once the message item is open and while
    all the streamer does is hold trailing whitespace back: the same output_text.delta events,
    numbered by the run (numbered_to)."""

    def __init__(self, streamer: MessageStreamer, builder: OutputBuilder, events: _Events) -> None:
        self.streamer = streamer
        self.builder = builder
        self.events = events
        self._template: tuple[object, NumberedTemplate | None] | None = None  # (its item, the template)

    def __call__(self, text: str) -> bytes:
        return b"".join(self.events(payload) for piece in self.streamer.feed(text)
                        for payload in self.builder.feed(piece))

    def native(self) -> tuple[Any, ...] | None:
        item = self.builder.open_message()
        if item is None:
            return None
        if self._template is None or self._template[0] is not item:
            self._template = item, numbered_template(
                lambda text, number: self.events.frame(self.builder.text_delta(item, text), number))
        return native_content(self.streamer.plain_pending(), self._template[1], self.events.next)

    def numbered_to(self, number: int) -> None:
        """A run sent events up to number - 1: the next event is `number`."""
        self.events.next = number


def _stream(http: HTTPRequest, runtime: Runtime, plan: ChatPlan, turn: _Turn, store: ResponseStore,
            first: Delta, deltas: DeltaStream) -> AsyncIterator[bytes]:
    event = _Events()

    async def events() -> AsyncIterator[bytes]:
        builder = OutputBuilder()
        streamer = MessageStreamer(plan.parser)
        final: dict[str, Any] | None = None
        kept = False
        if plan.parser.plain:  # (a parser would run on the engine thread)
            DirectSSE.attach(http, deltas, lambda: _DirectEvents(streamer, builder, event))
        try:
            for kind in ("response.created", "response.in_progress"):
                yield event({"type": kind, "response": turn.snapshot("in_progress")})
            delta: Delta | None = first
            while delta is not None:
                if delta.error is not None:
                    error, final = _failed(turn, builder, delta.error)
                    for payload in (error, {"type": "response.failed", "response": final}):
                        yield event(payload)
                    return
                for piece in streamer.feed(delta.text):
                    for payload in builder.feed(piece):
                        yield event(payload)
                if delta.finish_reason is not None:
                    record(http, delta.timings, delta.usage)
                    status, item_status, closing = _ENDINGS.get(delta.finish_reason,
                                                                _ENDINGS[FinishReason.CANCELLED])
                    last, message = streamer.finish()
                    for piece in last:
                        for payload in builder.feed(piece):
                            yield event(payload)
                    try:  # structured output that does not validate is never returned as complete
                        check_message(plan, message, "stop" if delta.finish_reason is FinishReason.STOP else "length")
                    except BotframeworkError as exc:
                        error, final = _failed(turn, builder, exc)
                        for payload in (error, {"type": "response.failed", "response": final}):
                            yield event(payload)
                        return
                    for payload in builder.finish(item_status):
                        yield event(payload)
                    usage = turn.usage(delta.usage, await _reasoning_tokens(runtime, builder))
                    final = turn.snapshot(status, builder.items(item_status), usage)
                    _keep(http, store, turn, final)  # stored before the client reads that it is done
                    kept = True
                    yield event({"type": closing, "response": final})
                    return
                delta = await anext(deltas, None)
        finally:
            await deltas.aclose()  # cancels the sequence if it is still running
            if not kept:
                if final is None:  # the client went away: kept as cancelled, with what it had
                    final = turn.snapshot("cancelled", builder.items("incomplete"))
                _keep(http, store, turn, final)

    return events()


@router.get("/v1/responses/{response_id}")
async def retrieve_response(response_id: str, http: HTTPRequest, stream: bool = False) -> Response:
    if stream:
        raise unsupported("stream", "is not supported on retrieval: stream a response when you create it")
    store = _store(http)
    stored = store.get(response_id)
    if stored is not None:
        return json_response(stored.response)
    running = store.running(response_id)
    if running is not None and running.store:
        return json_response(running.response)
    raise _not_found(response_id)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, http: HTTPRequest) -> dict[str, Any]:
    store = _store(http)
    if response_id not in store:
        if store.running(response_id) is not None:
            raise InvalidRequestError(f"Response '{response_id}' is in progress: cancel it first",
                                      param="response_id", code="response_in_progress")
        raise _not_found(response_id)
    await _drop_sessions(http, store.pop(response_id))  # its KV state too, unless the chain goes on
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, http: HTTPRequest) -> Response:
    store = _store(http)
    running = store.running(response_id)
    if running is None:
        stored = store.get(response_id)
        if stored is None:
            raise _not_found(response_id)
        raise InvalidRequestError(f"Response '{response_id}' is not in progress (status "
                                  f"'{stored.response['status']}'): only a running response can be cancelled",
                                  param="response_id", code="response_not_cancellable")
    await cancel_request(response_id, http)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(running.done.wait(), CANCEL_WAIT_S)
    return json_response(running.response)
