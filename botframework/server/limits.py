"""Request body size limit as a pure ASGI middleware (BaseHTTPMiddleware would hide disconnects).

    Content-Length > limit          --> 413 before the app runs
    chunked body grows past limit   --> the app's response is dropped, 413 sent instead
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        state: dict[str, Any] = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    state["exceeded"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"] and not state["started"]:
                return  # the app answered a truncated body: replace its answer with 413
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise  # a truncated body may make the app fail: that is the 413 below, not a 500
        if state["exceeded"] and not state["started"]:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await too_large_response(self.max_body_bytes, scope.get("path", ""))(scope, receive, send)


# paths whose clients read another protocol's error shape (server/adapters/), by path prefix:
# these answers come before any route could shape them. (message, Anthropic's error type) -> body
PROTOCOL_ERROR_BODIES: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "/v1/messages": lambda message, kind: {"type": "error", "error": {"type": kind, "message": message}},
    "/api/": lambda message, kind: {"error": message},  # Ollama's
}


def protocol_error(path: str, status: int, message: str, *, type: str, code: str, anthropic_type: str,
                   headers: dict[str, str] | None = None) -> Response:
    """An error answered before the routes, in the shape the path's protocol reads (OpenAI's
    unless PROTOCOL_ERROR_BODIES names another)."""
    shape = next((make for prefix, make in PROTOCOL_ERROR_BODIES.items() if path.startswith(prefix)), None)
    payload = shape(message, anthropic_type) if shape is not None else {"error": {
        "message": message, "type": type, "param": None, "code": code}}
    return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json",
                    headers=headers)


def too_large_response(max_body_bytes: int, path: str = "") -> Response:
    """413; the connection is closed (the rest of the body is unread)."""
    return protocol_error(path, 413, f"The request body is larger than {max_body_bytes} bytes",
                          type="invalid_request_error", code="request_too_large", anthropic_type="request_too_large",
                          headers={"connection": "close"})
