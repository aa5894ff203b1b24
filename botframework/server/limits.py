"""Request body size limit as a pure ASGI middleware (BaseHTTPMiddleware would hide disconnects).

    Content-Length > limit          --> 413 before the app runs
    chunked body grows past limit   --> the app's response is dropped, 413 sent instead
"""

from __future__ import annotations

import json
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
        await too_large_response(self.max_body_bytes)(scope, receive, send)


def too_large_response(max_body_bytes: int) -> Response:
    """413 in the API's error shape; the connection is closed (the rest of the body is unread)."""
    body = json.dumps({"error": {
        "message": f"The request body is larger than {max_body_bytes} bytes",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}).encode()
    return Response(body, status_code=413, media_type="application/json", headers={"connection": "close"})
