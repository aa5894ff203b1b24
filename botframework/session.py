"""A conversation that stays on the model between turns: the same class for LocalLLM and Client.

    llm.session(system=...) -> Session(id, messages)
      session.chat("next question") -> llm.chat(messages + [user], session_id=id) -> result;
          the answer joins `messages`, and the model keeps the turn's KV state under `id`,
          so the next turn prefills only its new tokens
      session.stream_chat(...)  the same, streamed; the answer joins once it is complete
      session.close()           -> llm.drop_session(id): the state is freed

The history is kept here, on the caller's side, and sent whole each turn: a session whose KV
state was evicted or lost (a restart, an unload) still answers, it only prefills again.
AsyncSession is the same over AsyncClient.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["AsyncSession", "Session", "new_session_id"]

Turn = str | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def new_session_id() -> str:
    return f"sess-{uuid.uuid4().hex}"


class _Chats(Protocol):
    def chat(self, messages: Any, **options: Any) -> Any: ...
    def stream_chat(self, messages: Any, **options: Any) -> Iterator[str]: ...
    def drop_session(self, session_id: str) -> bool: ...


class _AsyncChats(Protocol):
    async def chat(self, messages: Any, **options: Any) -> Any: ...
    async def stream_chat(self, messages: Any, **options: Any) -> AsyncIterator[str]: ...
    async def drop_session(self, session_id: str) -> bool: ...


class _History:
    def __init__(self, session_id: str | None, system: str | None, defaults: dict[str, Any]) -> None:
        self.id = session_id or new_session_id()
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
        self.defaults = defaults

    def turn(self, message: Turn) -> list[dict[str, Any]]:
        if isinstance(message, str):
            new = [{"role": "user", "content": message}]
        elif isinstance(message, Mapping):
            new = [dict(message)]
        else:
            new = [dict(m) for m in message]
        if not new:
            raise ValueError("a turn needs at least one message")
        return [*self.messages, *new]

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        if "session_id" in options:
            raise TypeError("a session sends its own session_id")
        return {**self.defaults, **options, "session_id": self.id}

    def answered(self, turn: list[dict[str, Any]], result: Any) -> None:
        self.messages = [*turn, _assistant(result)]


def _assistant(result: Any) -> dict[str, Any]:
    """The assistant turn a result adds to the history: its message (content, tool calls), or the
    JSON of a structured answer (a dict, a list, a pydantic instance)."""
    message = getattr(result, "message", None)
    if message is not None:
        out = message.to_openai()
        out.pop("refusal", None)
        out.pop("reasoning_content", None)  # templates drop it from past turns anyway
        return out  # type: ignore[no-any-return]
    if isinstance(result, str):
        return {"role": "assistant", "content": result}
    if hasattr(result, "model_dump_json"):
        return {"role": "assistant", "content": result.model_dump_json()}
    return {"role": "assistant", "content": json.dumps(result, ensure_ascii=False)}


class Session(_History):
    """A conversation on a LocalLLM or a Client (see the module docstring). `defaults` are
    generation options for every turn (a turn's own keywords win)."""

    def __init__(self, llm: _Chats, session_id: str | None = None, *, system: str | None = None,
                 **defaults: Any) -> None:
        super().__init__(session_id, system, defaults)
        self.llm = llm

    def chat(self, message: Turn, **options: Any) -> Any:
        turn = self.turn(message)
        result = self.llm.chat(turn, **self.options(options))
        self.answered(turn, result)
        return result

    def stream_chat(self, message: Turn, **options: Any) -> Iterator[str]:
        """The answer's text as it comes; it joins the history when the stream is read to its end."""
        turn = self.turn(message)
        pieces: list[str] = []
        stream = self.llm.stream_chat(turn, **self.options(options))
        try:
            for piece in stream:
                pieces.append(piece)
                yield piece
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        self.answered(turn, "".join(pieces))

    def close(self) -> None:
        """Free the session's state on the model (its history here is kept)."""
        self.llm.drop_session(self.id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSession(_History):
    """Session over an AsyncClient."""

    def __init__(self, llm: _AsyncChats, session_id: str | None = None, *, system: str | None = None,
                 **defaults: Any) -> None:
        super().__init__(session_id, system, defaults)
        self.llm = llm

    async def chat(self, message: Turn, **options: Any) -> Any:
        turn = self.turn(message)
        result = await self.llm.chat(turn, **self.options(options))
        self.answered(turn, result)
        return result

    async def stream_chat(self, message: Turn, **options: Any) -> AsyncIterator[str]:
        turn = self.turn(message)
        pieces: list[str] = []
        stream = await self.llm.stream_chat(turn, **self.options(options))
        try:
            async for piece in stream:
                pieces.append(piece)
                yield piece
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        self.answered(turn, "".join(pieces))

    async def close(self) -> None:
        await self.llm.drop_session(self.id)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
