"""Our answers in Anthropic's shapes: the whole message, its stream's events, errors.

    AssistantMessage (chat.plan.finish_message) --message_json--> {"type": "message", content: [
        thinking (reasoning_content), text (content), tool_use (each tool call, input parsed)]}
    MessageDelta pieces (chat.stream.MessageStreamer) --ContentBlocks.feed--> content_block_start
        (a ping after the first), content_block_delta (text_delta / thinking_delta /
        input_json_delta), content_block_stop when the next block starts or at the end
    any exception --error_status--> (status, {"type": "error", "error": {type, message}}):
        errors.to_api_error's status (the one mapping), its Anthropic type; a full queue is 529
        overloaded_error (the anthropic client's OverloadedError, retried after Retry-After)

The blocks come in the order the streamer sends the pieces, which is the order of the whole
message's content, so a streamed message adds up to the non-streamed one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from botframework.chat.message import AssistantMessage, MessageDelta
from botframework.errors import BusyError
from botframework.scheduler.output import Usage
from botframework.server.errors import to_api_error
from botframework.server.sse import prediction_details, text_template

log = logging.getLogger("botframework.server")

OVERLOADED_STATUS = 529  # Anthropic's "overloaded": anthropic.OverloadedError, retried by its clients
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                OVERLOADED_STATUS: "overloaded_error"}
_AUTH_MESSAGE = "invalid x-api-key: send this server's API key as 'x-api-key: <key>' (or 'Authorization: Bearer <key>')"


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event as Anthropic sends them: its type named on the `event:` line too."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


def error_status(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, body, headers) for any failure, in Anthropic's error shape."""
    if isinstance(exc, RequestValidationError):
        return 400, error_body("invalid_request_error", validation_message(exc)), None
    headers: dict[str, str] | None
    if isinstance(exc, HTTPException):  # FastAPI's own, e.g. a body that is not UTF-8
        status, message, headers = exc.status_code, str(exc.detail), dict(exc.headers or {})
    else:
        err = to_api_error(exc)
        status = OVERLOADED_STATUS if isinstance(exc, BusyError) else err.status
        message, headers = (_AUTH_MESSAGE if status == 401 else err.message), err.headers
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, error_body(kind, message), headers


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_event(exc: BaseException) -> bytes:
    """A failure after the stream began: an `error` event (the anthropic client raises it)."""
    return event("error", error_status(exc)[1])


def validation_message(exc: RequestValidationError) -> str:
    """The most specific of pydantic's errors (a union reports one per member; the deepest is
    the one that says what is wrong), as Anthropic words them: "path.to.field: message"."""
    errors = exc.errors()
    if not errors:
        return "invalid request body"
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON"
    # union members and tagged variants appear as path items: keep the body's own names
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_member(str(p))]
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        message = "Extra inputs are not permitted"
    return f"{'.'.join(loc)}: {message}" if loc else message


def _union_member(item: str) -> bool:
    return "[" in item or item in ("str", "int", "float", "bool", "dict", "list", "none", "other",
                                   "ToolChoiceAuto", "ToolChoiceAny", "ToolChoiceNone", "ToolChoiceTool")


def usage_json(usage: Usage | None, num_prompt_tokens: int = 0) -> dict[str, Any]:
    """Anthropic counts the prompt as input_tokens + cache_read_input_tokens (+ creation): the
    tokens prefilled now, and those reused from our KV cache (a session, a shared prefix)."""
    if usage is None:
        return {"input_tokens": num_prompt_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": usage.cached_tokens,
            **prediction_details(usage)}  # extension: speculative drafts, only when the request drafted


def tool_input(arguments: str) -> dict[str, Any]:
    """A finished call's arguments (JSON the parser has checked against the tool's schema)."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        log.warning("tool call arguments are not a JSON object: %.200s", arguments)
        return {}
    return value


def content_json(message: AssistantMessage) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if message.reasoning_content:
        out.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.content:
        out.append({"type": "text", "text": message.content})
    out += [{"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)}
            for call in message.tool_calls]
    return out


def message_json(message_id: str, model: str, content: list[dict[str, Any]], stop_reason: str | None,
                 stop_sequence: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}


class ContentBlocks:
    """A stream's content blocks: streamed message pieces in, Anthropic's block events out.

    May run on the engine thread (a direct stream, server/direct.py) while the route waits for
    the next delta; the route uses it again only once that thread has let go of the stream."""

    def __init__(self) -> None:
        self.num_blocks = 0
        self._open: str | None = None      # "thinking", "text" or "tool_use" while a block is open
        self._calls: dict[int, int] = {}   # tool call index -> its block's index
        self._pinged = False
        self._text_event: Callable[[str], bytes] | None = None  # the open text block's delta, pre-split

    def feed(self, pieces: list[MessageDelta]) -> bytes:
        out: list[bytes] = []
        for piece in pieces:
            call = piece.tool_call
            if call is not None:
                if call.id is not None:  # a new call: its block opens with an empty input
                    out.append(self._start("tool_use", {"type": "tool_use", "id": call.id, "name": call.name or "",
                                                        "input": {}}))
                    self._calls[call.index] = self.num_blocks - 1
                if call.arguments:
                    index = self._calls.get(call.index, self.num_blocks - 1)
                    out.append(self._delta(index, {"type": "input_json_delta", "partial_json": call.arguments}))
            elif piece.reasoning_content:
                if self._open != "thinking":
                    out.append(self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
                out.append(self._delta(self.num_blocks - 1,
                                       {"type": "thinking_delta", "thinking": piece.reasoning_content}))
            elif piece.content:
                text_event = self._text_event if self._open == "text" else None
                if text_event is None:
                    out.append(self._start("text", {"type": "text", "text": ""}))
                    text_event = self._text_event = self._text_delta(self.num_blocks - 1)
                out.append(text_event(piece.content))
        return b"".join(out)

    def open_text(self) -> Callable[[str], bytes] | None:
        """The open text block's delta event for a text (a sse.TextTemplate when it could be
        split), or None when no text block is open."""
        return self._text_event if self._open == "text" else None

    def close(self) -> bytes:
        """The last block's stop (and the ping, if no block ever opened)."""
        out = self._stop()
        if not self._pinged:
            self._pinged = True
            out += event("ping", {"type": "ping"})
        return out

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._stop()
        out += event("content_block_start", {"type": "content_block_start", "index": self.num_blocks,
                                             "content_block": block})
        self.num_blocks += 1
        self._open = kind
        if not self._pinged:  # where Anthropic's API sends its first ping
            self._pinged = True
            out += event("ping", {"type": "ping"})
        return out

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        self._text_event = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self.num_blocks - 1})

    def _text_delta(self, index: int) -> Callable[[str], bytes]:
        """The text block's delta event, as head + text + tail (text_template: ~1 us a delta)."""
        return text_template(lambda text: self._delta(index, {"type": "text_delta", "text": text}))

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
