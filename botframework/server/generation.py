"""Running a request for a route: submit, first delta, whole answer, disconnects.

    validation.engine_request(body, ...) -> Request --choice_requests--> one per choice (n > 1)
    start / start_all: runtime.submit(Request, loop) -> DeltaStream (runtime.stream); wait for
        the first delta, so that queue and context errors become HTTP errors
    then collect / collect_all (whole answer; a client disconnect cancels)   or
         the route's SSE generator (server/sse.py; closing it cancels the request)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import Request as HTTPRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from botframework.config import INLINE_EMBED_TOKENS
from botframework.errors import ModelLoadError
from botframework.runtime.handle import CHOICE_SEP
from botframework.runtime.registry import Registry
from botframework.runtime.stream import Collected, DeltaStream, collect_async
from botframework.scheduler.output import Delta, FinishReason, Usage
from botframework.scheduler.sequence import Request
from botframework.server.errors import APIError
from botframework.server.logs import adopt_response_id
from botframework.server.runtime import Runtime
from botframework.server.settings import ServerSettings
from botframework.server.sse import Started
from botframework.server.validation import check_choices

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


async def embed_vectors(http: HTTPRequest, runtime: Runtime, inputs: list[str] | list[list[int]]
                        ) -> tuple[list[np.ndarray], int]:
    """The inputs' vectors and their number of tokens, for every embedding route: tokenized
    here (tokenizer_call), computed on the model's engine thread, awaited as futures (one
    wake-up of the loop, no worker thread in between). A lone input of a sentence's length
    while no other request holds a model is computed on the loop itself when the engine is
    idle (ModelWorker.embed_submit's inline_tokens): no thread hop there and back, and
    nothing else is waiting for the loop meanwhile."""
    alone = get_registry(http).num_in_flight <= 1
    num_chars = sum(len(i) for i in inputs if isinstance(i, str))
    futures, num_tokens = await tokenizer_call(num_chars, runtime.embed_submit, inputs,
                                               inline_tokens=INLINE_EMBED_TOKENS if alone else 0)
    if all(future.done() for future in futures):  # (wrap_future would still go round the loop once)
        return [future.result() for future in futures], num_tokens
    if len(futures) == 1:  # the common case, without gather's extra round through the loop
        return [await asyncio.wrap_future(futures[0])], num_tokens
    return list(await asyncio.gather(*(asyncio.wrap_future(future) for future in futures))), num_tokens


LEASES = "botframework.leases"  # the ASGI scope's list of this request's model leases (released by ReleaseLeases)


def get_registry(http: HTTPRequest) -> Registry[Runtime]:
    """The app's registry of declared models; 503 while the server is still starting."""
    registry: Registry[Runtime] | None = http.app.state.registry
    if registry is None:
        raise APIError(503, "The server is starting", type="service_unavailable", code="model_unavailable",
                       headers={"Retry-After": "5"})
    return registry


async def get_runtime(http: HTTPRequest, model: str | None = None, *, keep_alive_s: float | None = None) -> Runtime:
    """The named model (the default one if None) for this request, loaded first if need be.

    The model stays leased (never unloaded or evicted) until the whole response has been sent,
    streams included: ReleaseLeases, around the app, releases it. Unknown names are a 404
    listing what is served (ModelNotFoundError, mapped in errors.py); a model that cannot be
    loaded is a 503. `keep_alive_s`: how long the model stays loaded once idle after this
    request (Registry.acquire; None: its configured keep-alive)."""
    registry = get_registry(http)
    try:
        lease = await registry.acquire(model or None, keep_alive_s=keep_alive_s)
    except ModelLoadError as exc:
        raise APIError(503, f"The model is not available: {exc}", type="service_unavailable",
                       code="model_unavailable", headers={"Retry-After": "5"}) from None
    if getattr(lease.handle, "kind", None) == "remote":  # forwarded only on the routes RemoteRoutes takes
        lease.release()
        raise APIError(400, f"'{model}' is a remote model: only /v1/chat/completions, /v1/completions and "
                            "/v1/embeddings are forwarded to it", param="model", code="remote_model")
    leases = http.scope.setdefault(LEASES, [])
    leases.append(lease)
    return lease.handle  # type: ignore[no-any-return]


class ReleaseLeases:
    """ASGI middleware: when a request's response is done (its last byte sent, or the client
    gone), release the models it leased."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            for lease in scope.pop(LEASES, ()):
                lease.release()


def new_id(prefix: str) -> str:
    """A response id; the request's log lines and x-request-id header carry it (logs.py)."""
    response_id = f"{prefix}-{uuid.uuid4().hex[:24]}"
    adopt_response_id(response_id)
    return response_id


def openai_finish_reason(reason: FinishReason | None) -> str:
    # OpenAI knows stop / length; a cancelled request ended early at the caller's wish.
    return "length" if reason is FinishReason.LENGTH else "stop"


async def start(http: HTTPRequest, runtime: Runtime, request: Request) -> tuple[Delta, DeltaStream]:
    """Submit and wait for the first delta, so that queue and context errors become HTTP errors.
    While no other request holds a model, a one-token answer with a short prompt is computed on
    the loop itself when the engine is idle (ModelWorker.submit's inline): nothing else is
    waiting for the loop meanwhile."""
    handle = runtime.submit(request, asyncio.get_running_loop(), inline=get_registry(http).num_in_flight <= 1)
    deltas = DeltaStream(handle)
    try:
        first = await until_disconnected(http, deltas.__anext__())
    except BaseException:
        handle.cancel()
        raise
    if first.error is not None:
        await deltas.aclose()
        raise first.error
    return first, deltas


def choice_requests(request: Request, n: int, settings: ServerSettings) -> list[Request]:
    """One engine request per choice (n > 1): ids id, id~1, ...; a given seed becomes seed, seed+1, ..."""
    check_choices(n, settings)
    out = [request]
    for i in range(1, n):
        sampler = request.params.sampler
        if sampler.seed is not None:
            sampler = dataclasses.replace(sampler, seed=(sampler.seed + i) % (2**32 - 1))
        out.append(dataclasses.replace(request, request_id=f"{request.request_id}{CHOICE_SEP}{i}",
                                       params=dataclasses.replace(request.params, sampler=sampler)))
    return out


async def start_all(http: HTTPRequest, runtime: Runtime, requests: list[Request]) -> Started:
    """`start` for every choice; if one fails, the others are cancelled and its error raised."""
    if len(requests) == 1:
        return [await start(http, runtime, requests[0])]
    results = await asyncio.gather(*(start(http, runtime, r) for r in requests), return_exceptions=True)
    started: Started = []
    failed: list[BaseException] = []
    for r in results:
        if isinstance(r, BaseException):
            failed.append(r)
        else:
            started.append(r)
    if failed:
        for _, deltas in started:
            await deltas.aclose()
        raise failed[0]
    return started


async def collect_all(http: HTTPRequest, started: Started) -> list[Collected]:
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


async def collect(http: HTTPRequest, first: Delta, deltas: DeltaStream) -> Collected:
    """Gather a whole answer (runtime.stream's accumulator); if the client goes away
    meanwhile, cancel the request."""
    try:
        if first.finish_reason is not None or first.error is not None:
            out = await collect_async(deltas, first)  # already whole (max_tokens 1, an early stop): no wait
        else:
            out = await until_disconnected(http, collect_async(deltas, first))
    finally:
        await deltas.aclose()  # cancels the sequence if unfinished
    record(http, out.timings, out.usage)
    return out


def record(http: HTTPRequest, timings: dict[str, float], usage: Usage | None) -> None:
    metrics = getattr(http.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe(timings, usage)
