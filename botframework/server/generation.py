"""Shared by chat and completions: protocol request -> engine Request, and running it.

    ChatCompletionRequest / CompletionRequest --build_request--> Request(SamplingParams)
    runtime.submit(Request, loop) -> RequestHandle --first_delta (errors become HTTP status)
        -> collect (non-streaming; a client disconnect cancels)   or
        -> the route's SSE generator (closing it cancels the request)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request as HTTPRequest
from fastapi.responses import Response

from botframework.specs import SamplingParams
from botframework.errors import InvalidRequestError
from botframework.specs import SamplerSpec
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage
from botframework.scheduler.sequence import Priority, Request
from botframework.server.errors import (
    APIError,
    error_body,
    model_not_found,
    to_api_error,
)
from botframework.server.protocol import ChatCompletionRequest, CompletionRequest
from botframework.server.runtime import CHOICE_SEP, Runtime
from botframework.server.settings import ServerSettings

if TYPE_CHECKING:
    from botframework.server.direct import DirectSSE

_PRIORITY = {"interactive": Priority.INTERACTIVE, "completion": Priority.COMPLETION, "batch": Priority.BATCH}
_DISCONNECT_POLL_S = 0.25
INLINE_TOKENIZE_CHARS = 2048  # see tokenizer_call
T = TypeVar("T")


async def tokenizer_call(num_chars: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), a tokenizer call over about num_chars characters: on the event loop
    up to INLINE_TOKENIZE_CHARS (tens of microseconds, less than the hop to a worker thread),
    on a worker thread above."""
    if num_chars <= INLINE_TOKENIZE_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def get_runtime(http: HTTPRequest, model: str | None = None) -> Runtime:
    runtime: Runtime | None = http.app.state.runtime
    if runtime is None:
        detail = http.app.state.load_error or "the model is still loading"
        raise APIError(503, f"The model is not available: {detail}", type="service_unavailable",
                       code="model_unavailable", headers={"Retry-After": "5"})
    if model is not None and model != runtime.model_id:
        raise model_not_found(model)
    return runtime


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def openai_finish_reason(reason: FinishReason | None) -> str:
    # OpenAI knows stop / length; a cancelled request ended early at the caller's wish.
    return "length" if reason is FinishReason.LENGTH else "stop"


def build_request(body: ChatCompletionRequest | CompletionRequest, tokens: list[int], extra_stops: tuple[str, ...],
                  settings: ServerSettings, runtime: Runtime, request_id: str, *,
                  truncated_tokens: int = 0) -> Request:
    max_tokens = body.requested_max_tokens
    param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens"
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise APIError(400, f"'{param}' is {max_tokens}; this server allows at most {settings.max_tokens_cap}",
                       param=param, code="invalid_value")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > settings.max_stop_strings or any(not s or len(s) > 1024 for s in stops):
        raise APIError(400, f"'stop' takes at most {settings.max_stop_strings} non-empty strings of up to "
                       "1024 characters", param="stop", code="invalid_value")
    bias = _logit_bias(body.logit_bias, runtime.n_vocab, settings.max_logit_bias)
    if len(tokens) >= runtime.n_ctx:
        from botframework.errors import ContextLengthExceededError

        raise ContextLengthExceededError(
            f"This model's maximum context length is {runtime.n_ctx} tokens, but the prompt has {len(tokens)}",
            num_prompt_tokens=len(tokens), num_ctx=runtime.n_ctx,
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt")
    defaults = SamplerSpec()
    try:
        params = SamplingParams(
            max_tokens=max_tokens or min(settings.max_tokens_cap, runtime.n_ctx - len(tokens)),
            stop=tuple(stops) + extra_stops, num_logprobs=body.num_logprobs, ignore_eos=body.ignore_eos,
            sampler=SamplerSpec(
                temperature=_pick(body.temperature, 1.0), top_p=_pick(body.top_p, 1.0),
                top_k=_pick(body.top_k, defaults.top_k), min_p=_pick(body.min_p, defaults.min_p),
                repeat_penalty=_pick(body.repeat_penalty, 1.0),
                presence_penalty=_pick(body.presence_penalty, 0.0),
                frequency_penalty=_pick(body.frequency_penalty, 0.0),
                seed=None if body.seed in (None, -1) else body.seed, logit_bias=bias))
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    return Request(request_id, tuple(tokens), params, session_id=body.session_id, priority=_PRIORITY[body.priority],
                   truncated_tokens=truncated_tokens, context_shift=body.context_shift, num_keep=body.n_keep)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _logit_bias(bias: dict[str, float] | None, n_vocab: int, cap: int) -> dict[int, float]:
    if not bias:
        return {}
    if len(bias) > cap:
        raise APIError(400, f"'logit_bias' has {len(bias)} entries; at most {cap} are allowed", param="logit_bias")
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise APIError(400, f"'logit_bias' keys must be token ids, not {key!r}", param="logit_bias") from None
        if not 0 <= token < n_vocab:
            raise APIError(400, f"'logit_bias' token id {token} is out of the vocabulary (0..{n_vocab - 1})",
                           param="logit_bias")
        out[token] = value
    return out


class DeltaStream:
    """A handle's deltas, as `start` returns them: an async iterator that knows its handle.

    A streaming route may give it a DirectSSE (DirectSSE.attach): armed before each wait for
    the next delta, so the engine thread writes the deltas meanwhile, and closed with it."""

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self.direct: DirectSSE | None = None
        self._deltas = handle.__aiter__()

    def __aiter__(self) -> DeltaStream:
        return self

    def __anext__(self) -> Awaitable[Delta]:
        if self.direct is not None:
            self.direct.arm()
        return self._deltas.__anext__()

    async def aclose(self) -> None:
        if self.direct is not None:
            self.direct.close()
        await self._deltas.aclose()  # type: ignore[attr-defined]


async def start(http: HTTPRequest, runtime: Runtime, request: Request) -> tuple[Delta, AsyncIterator[Delta]]:
    """Submit and wait for the first delta, so that queue and context errors become HTTP errors."""
    handle = runtime.submit(request, asyncio.get_running_loop())
    deltas = DeltaStream(handle)
    try:
        first = await until_disconnected(http, deltas.__anext__())
    except BaseException:
        handle.cancel()
        raise
    if first.error is not None:
        await deltas.aclose()  # type: ignore[attr-defined]
        raise first.error
    return first, deltas


def choice_requests(request: Request, n: int, settings: ServerSettings) -> list[Request]:
    """One engine request per choice (n > 1): ids id, id~1, ...; a given seed becomes seed, seed+1, ..."""
    if n > settings.max_choices:
        raise APIError(400, f"'n' is {n}; this server allows at most {settings.max_choices}", param="n",
                       code="invalid_value")
    out = [request]
    for i in range(1, n):
        sampler = request.params.sampler
        if sampler.seed is not None:
            sampler = dataclasses.replace(sampler, seed=(sampler.seed + i) % (2**32 - 1))
        out.append(dataclasses.replace(request, request_id=f"{request.request_id}{CHOICE_SEP}{i}",
                                       params=dataclasses.replace(request.params, sampler=sampler)))
    return out


async def start_all(http: HTTPRequest, runtime: Runtime, requests: list[Request]
                    ) -> list[tuple[Delta, AsyncIterator[Delta]]]:
    """`start` for every choice; if one fails, the others are cancelled and its error raised."""
    if len(requests) == 1:
        return [await start(http, runtime, requests[0])]
    results = await asyncio.gather(*(start(http, runtime, r) for r in requests), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for r in results:
            if not isinstance(r, BaseException):
                await r[1].aclose()  # type: ignore[attr-defined]
        raise failed[0]
    return results  # type: ignore[return-value]


async def collect_all(http: HTTPRequest, started: list[tuple[Delta, AsyncIterator[Delta]]]) -> list[Collected]:
    """`collect` every choice at once; if one fails (a disconnect), the others are cancelled."""
    if len(started) == 1:
        return [await collect(http, *started[0])]
    tasks = [asyncio.ensure_future(collect(http, first, deltas)) for first, deltas in started]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()  # no-op for the finished ones; the others close their streams (cancel)
        await asyncio.gather(*tasks, return_exceptions=True)


def total_usage(usages: list[Usage | None]) -> Usage | None:
    """OpenAI's usage for n choices: the prompt once, completion tokens of all choices."""
    known = [u for u in usages if u is not None]
    if not known:
        return None
    first = known[0]
    return Usage(prompt_tokens=first.prompt_tokens, completion_tokens=sum(u.completion_tokens for u in known),
                 cached_tokens=first.cached_tokens, truncated_tokens=first.truncated_tokens)


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


async def sse_choices(started: list[tuple[Delta, AsyncIterator[Delta]]], streams: list[AsyncIterator[bytes]],
                      state: StreamState, base: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
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
            await deltas.aclose()  # type: ignore[attr-defined]


async def until_disconnected(http: HTTPRequest, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client closes the connection meanwhile.

    Needed outside the SSE generator (which Starlette cancels on disconnect itself): while a
    request waits in the queue, prefills, or is generated whole for a non-streamed answer.
    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if not task.done() and await http.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise APIError(499, "the client closed the connection", type="cancelled",
                               code="client_disconnected")
    finally:
        if not task.done():  # we were cancelled ourselves
            task.cancel()
    return task.result()


@dataclass
class Collected:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[tuple[int, float, tuple[tuple[int, float], ...]]] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: dict[str, float] = field(default_factory=dict)


async def collect(http: HTTPRequest, first: Delta, deltas: AsyncIterator[Delta]) -> Collected:
    """Gather a whole answer; if the client goes away meanwhile, cancel the request."""
    out = Collected()
    parts: list[str] = []

    async def gather() -> None:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                raise delta.error
            parts.append(delta.text)
            out.token_ids.extend(delta.token_ids)
            out.logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                out.finish_reason, out.usage, out.timings = delta.finish_reason, delta.usage, delta.timings
            delta = await anext(deltas, None)

    try:
        await until_disconnected(http, gather())
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]  # cancels the sequence if unfinished
    out.text = "".join(parts)
    record(http, out.timings, out.usage)
    return out


def record(http: HTTPRequest, timings: dict[str, float], usage: Usage | None) -> None:
    metrics = getattr(http.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe(timings, usage)


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


_MARK = "\u2063botframework-text\u2063"


def text_template(make: Callable[[str], bytes]) -> Callable[[str], bytes]:
    """`make`, a chunk's bytes for a text that is one JSON string in it, as head + the string's
    JSON + tail: the same bytes for ~1 us, not a json.dumps of the whole chunk (the engine
    thread formats a direct stream's chunks: see server/direct.py). `make` itself if the chunk
    cannot be split so (the marker twice), or the split gets a probe wrong."""
    mark = encode_basestring(_MARK).encode()
    parts = make(_MARK).split(mark)
    if len(parts) != 2:
        return make
    head, tail = parts

    def fast(text: str) -> bytes:
        return head + encode_basestring(text).encode() + tail

    probe = 'a "q" \\ \n\t\u00e9 \U0001f642 </s> \u2028'
    return fast if fast(probe) == make(probe) else make


def sse_error(exc: BaseException) -> bytes:
    """An error in the middle of a stream: one OpenAI-shaped error event (then the caller ends it)."""
    err = to_api_error(exc)
    return sse(error_body(err.message, err.type, err.param, err.code))


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
    if usage.truncated_tokens:
        out["truncated_tokens"] = usage.truncated_tokens  # extension: dropped by overflow="truncate"
    return out
