"""Short requests past FastAPI's machinery: the same route function, called with less around it.

A small request (one sentence to embed) costs the model ~2.5 ms on this 2-core machine; FastAPI
and Starlette add ~0.7 ms around it (a dozen middleware layers, dependency solving, the body
read through them). For the routes listed in FAST_ROUTES, this ASGI layer, outermost in the
app, does what those layers do for them and calls the route's own function:

    POST <path>, Content-Type: application/json, no CORS configured
      -> API key (auth.require_api_key) -> body, at most max_body_bytes (413 past it)
      -> the route's pydantic model (400 in the same shape as errors.install's)
      -> await route(body, request) -> its Response; errors through errors.error_response;
         the models it leased released when the response is sent (as ReleaseLeases does)
    anything else -> the full app, unchanged

One handler per route either way (the FastAPI route stays, and documents it in /openapi.json);
only the dispatch is shorter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from botframework.server import errors
from botframework.server.auth import require_api_key
from botframework.server.generation import LEASES
from botframework.server.limits import too_large_response

Handler = Callable[[Any, HTTPRequest], Awaitable[Response]]


class FastRoutes:
    """ASGI middleware: `routes` maps a POST path to (its pydantic body model, its handler)."""

    def __init__(self, app: ASGIApp, outer: Any, routes: dict[str, tuple[type[pydantic.BaseModel], Handler]]) -> None:
        self.app = app
        self.outer = outer  # the FastAPI app: request.app, its state and settings
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" \
            else None
        if route is None or not self._plain_json(scope):
            await self.app(scope, receive, send)
            return
        scope["app"] = self.outer
        request = HTTPRequest(scope, receive)
        try:
            response = await self._handle(request, receive, *route)
            await response(scope, receive, send)
        finally:
            for lease in scope.pop(LEASES, ()):
                lease.release()

    def _plain_json(self, scope: Scope) -> bool:
        if self.outer.state.settings.cors_origins:
            return False  # CORSMiddleware answers preflights and adds headers: the full app
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
        return False

    async def _handle(self, request: HTTPRequest, receive: Receive, model: type[pydantic.BaseModel],
                      handler: Handler) -> Response:
        limit: int = self.outer.state.settings.max_body_bytes
        try:
            await require_api_key(request)
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return too_large_response(limit)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return Response(status_code=499)
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return too_large_response(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            raw = b"".join(chunks)
            if not raw:  # as FastAPI says it
                return errors.validation_response(RequestValidationError(
                    [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]))
            try:
                body = _validated(model, raw)
            except pydantic.ValidationError as exc:
                return errors.validation_response(RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]))
            return await handler(body, request)
        except Exception as exc:  # noqa: BLE001 - every error answered in the API's shape, as the app does
            return errors.error_response(exc)


def _validated(model: type[pydantic.BaseModel], raw: bytes) -> pydantic.BaseModel:
    """The body as FastAPI would read it. pydantic's JSON parser (fast, used first) refuses
    nesting past 200 levels, where FastAPI's json.loads goes on and the routes then name what
    is too deep (a schema, a grammar): such a body is parsed again the way FastAPI does."""
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        if not any(e["type"] == "json_invalid" and "recursion" in e["msg"] for e in exc.errors()):
            raise
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise exc from None
        return model.model_validate(data)
