"""Logging that reads well in journald and in a terminal, with a request id on every line
logged while a request runs.

    log_config(level, tty) -> the dict for uvicorn.run(log_config=...) (logging.config.dictConfig)
        one stderr handler for uvicorn, uvicorn.access, botframework.* and the root logger
        LineFormatter: "LEVEL name: [request id] message"; no timestamp (journald adds its own)
          tty:     the level in colour, tracebacks as Python prints them
          no tty:  no ANSI escapes, and one line per event (a traceback folded onto its line)
          journald (JOURNAL_STREAM names stderr): a "<N>" syslog prefix, so `journalctl -p err` works
    RequestIdMiddleware (outermost ASGI layer): the request's id is the client's x-request-id
        header, else a new "req-..." id that the route's response id (chatcmpl-...) replaces
        when it makes one (adopt_response_id); it is sent back as the x-request-id header
    RequestIdFilter (on the handlers): puts the current id on each record as record.request_id

The id lives in a ContextVar: each request runs in its own task (uvicorn), and the tasks a
response starts (Starlette's streaming) copy the context, so lines they log carry it too.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
TRACE = 5  # uvicorn's level below debug
_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG, "trace": TRACE}
# a client's id goes into log lines and a header as sent: no spaces, quotes or control characters
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# syslog priorities for journald's "<N>" line prefix (SyslogLevelPrefix=, on by default)
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_COLOURS = {logging.CRITICAL: "\x1b[91m", logging.ERROR: "\x1b[31m", logging.WARNING: "\x1b[33m",
            logging.INFO: "\x1b[32m", logging.DEBUG: "\x1b[36m", TRACE: "\x1b[34m"}
_RESET = "\x1b[0m"
_SHOWN_NAMES = {"uvicorn.error": "uvicorn"}  # uvicorn's general logger, not only errors


@dataclass
class RequestIds:
    """The id of the request being served; mutable so that a route can replace it."""

    value: str
    from_client: bool = False   # the client's x-request-id: kept as sent
    started: bool = False       # the response has started: the id in its header is final


_CURRENT: ContextVar[RequestIds | None] = ContextVar("botframework_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code runs for, if any."""
    ids = _CURRENT.get()
    return ids.value if ids is not None else None


def adopt_response_id(response_id: str) -> None:
    """Name the current request by its response's id (chatcmpl-...), so that log lines, the
    x-request-id header and the response body agree. A client's own x-request-id wins, and
    the id no longer changes once the response has started."""
    ids = _CURRENT.get()
    if ids is not None and not ids.from_client and not ids.started:
        ids.value = response_id


def _client_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if _CLIENT_ID.fullmatch(text) else None
    return None


class _EchoId:
    """`send` that adds x-request-id to the response's headers. It keeps `__self__`, the
    server's response cycle, which direct.ExposeConnection looks for on the `send` it gets."""

    def __init__(self, send: Send, ids: RequestIds) -> None:
        self._send = send
        self._ids = ids
        self.__self__ = getattr(send, "__self__", None)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self._ids.started:
            self._ids.started = True
            headers = list(message.get("headers", ()))
            if not any(name.lower() == REQUEST_ID_HEADER for name, _ in headers):
                headers.append((REQUEST_ID_HEADER, self._ids.value.encode("latin-1")))
                message = {**message, "headers": headers}
        await self._send(message)


_ID_PREFIX = uuid.uuid4().hex[:12]  # this process's; a counter after it (uuid4 per request cost ~5 us)
_ID_COUNTER = itertools.count(1)


def _new_id() -> str:
    """req- and 24 hex digits, unique within the process and across processes (random prefix)."""
    return f"req-{_ID_PREFIX}{next(_ID_COUNTER):012x}"


class RequestIdMiddleware:
    """Pure ASGI: give each HTTP request an id for its log lines, and send it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _client_id(scope)
        ids = RequestIds(given, from_client=True) if given else RequestIds(_new_id())
        token = _CURRENT.set(ids)
        await self.app(scope, receive, _EchoId(send, ids))
        # not reset when the app raised: the server's "Exception in ASGI application" line,
        # logged by this request's task after it, still names the request
        _CURRENT.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on each record (record.request_id; "" outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or ""
        return True


class LineFormatter(logging.Formatter):
    """ "LEVEL name: [request id] message". `use_colors` colours the level (a terminal);
    `fold` puts a traceback and any other line breaks on the event's one line (" | ");
    `journald` prefixes the syslog priority ("<3>") that journald turns into PRIORITY=."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: Any = "%", *,
                 use_colors: bool | None = None, fold: bool | None = None, journald: bool = False) -> None:
        super().__init__(fmt, datefmt, style)
        self.use_colors = bool(use_colors)
        self.fold = not self.use_colors if fold is None else fold
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        if self.fold:
            text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        level = record.levelname
        if self.use_colors:
            level = f"{_COLOURS.get(record.levelno, '')}{level}{_RESET}"
        request_id = getattr(record, "request_id", "")
        tag = f"[{request_id}] " if request_id else ""
        line = f"{level} {_SHOWN_NAMES.get(record.name, record.name)}: {tag}{text}"
        if self.journald:
            line = f"<{_priority(record.levelno)}>{line}"
        return line


def _priority(levelno: int) -> int:
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7  # debug, trace


def under_journald() -> bool:
    """Whether stderr is journald's stream: JOURNAL_STREAM ("device:inode", set by systemd)
    names the file stderr is."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def log_config(level: str, tty: bool, *, journald: bool | None = None) -> dict[str, Any]:
    """uvicorn's log_config for the server: every logger through one stderr handler in
    LineFormatter's one-line format. `tty`: stderr is a terminal (colours, tracebacks as
    printed); `journald` (default: detected from JOURNAL_STREAM): add syslog priorities.
    The formatters are named "default" and "access" as in uvicorn's own config, because
    uvicorn.run(use_colors=...) sets that key in both."""
    try:
        numeric = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}") from None
    formatter = {"()": f"{__name__}.LineFormatter", "use_colors": tty, "fold": not tty,
                 "journald": under_journald() if journald is None else journald}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": dict(formatter), "access": dict(formatter)},
        "handlers": {"default": {**handler, "formatter": "default"}, "access": {**handler, "formatter": "access"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": numeric, "propagate": False},
            "uvicorn.error": {"level": numeric},
            "uvicorn.access": {"handlers": ["access"], "level": numeric, "propagate": False},
            "botframework": {"handlers": ["default"], "level": numeric, "propagate": False},
        },
        # libraries' own loggers (httpx, huggingface_hub, ...): their warnings, in the same format
        "root": {"handlers": ["default"], "level": logging.WARNING},
    }
