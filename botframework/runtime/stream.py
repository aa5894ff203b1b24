"""A request's deltas as its consumer reads them, and its whole result gathered from them.

    ModelHandle.submit -> RequestHandle --DeltaStream--> for delta in stream        (LocalLLM: errors raised)
                                                     \\-> async for delta in stream (server: error deltas
                                                                                   kept, DirectSSE armed)
    deltas --Collected.add--> text, token_ids, logprobs, finish_reason, usage, timings
              collect(stream) (sync)   /   await collect_async(stream, first) (asyncio)

The two ways of reading differ on purpose: a Python caller wants the error raised where it
iterates; the server has to turn an error that comes after chunks were sent into an SSE error
event, so it reads error deltas as values.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, cast

from botframework.errors import BotframeworkError, ClosedError
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage

Logprob = tuple[int, float, tuple[tuple[int, float], ...]]  # (token, logprob, ((alternative, logprob), ...))


class DirectWriter(Protocol):
    """Writes a stream's chunks from the engine thread (server.direct.DirectSSE)."""

    def arm(self) -> None: ...    # before each wait for the next delta
    def close(self) -> None: ...  # when the stream is closed


class DeltaStream(Iterator[Delta], AsyncIterator[Delta]):
    """The deltas of one request, read once, either way:

    sync (`for`): a delta carrying an error raises it; close(), or dropping the stream
        unfinished, cancels the request even before its first delta was read (which a plain
        generator cannot do).
    async (`async for`, a handle made with a loop): every delta as it is, errors included;
        `direct` (server/direct.py) is armed before each wait and closed by aclose(), which
        also cancels the request if it is still running.
    """

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self.direct: DirectWriter | None = None
        self._sync: Iterator[Delta] | None = None
        self._async: AsyncGenerator[Delta, None] | None = None

    # -- sync -------------------------------------------------------------------------------
    def __iter__(self) -> DeltaStream:
        return self

    def __next__(self) -> Delta:
        if self._sync is None:
            self._sync = iter(self.handle)
        delta = next(self._sync)
        if delta.error is not None:
            self.handle.cancel()
            raise delta.error
        return delta

    def close(self) -> None:
        self.handle.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(ClosedError):  # the model went first: nothing left to cancel
            self.handle.cancel()

    # -- async ------------------------------------------------------------------------------
    def __aiter__(self) -> DeltaStream:
        return self

    def __anext__(self) -> Awaitable[Delta]:
        if self.direct is not None:
            self.direct.arm()
        if self._async is None:
            self._async = cast(AsyncGenerator[Delta, None], self.handle.__aiter__())
        return self._async.__anext__()

    async def aclose(self) -> None:
        if self.direct is not None:
            self.direct.close()
        if self._async is not None:
            await self._async.aclose()  # its finally cancels the request if unfinished
        else:
            self.handle.cancel()


@dataclass
class Collected:
    """A request's whole result, gathered delta by delta (the one accumulator of LocalLLM and the server)."""

    parts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Logprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def final(self) -> tuple[FinishReason, Usage]:
        """How it finished and what it used; BotframeworkError if it has not finished."""
        if self.finish_reason is None or self.usage is None:
            raise BotframeworkError("the request ended without a result")
        return self.finish_reason, self.usage

    def add(self, delta: Delta) -> bool:
        """Take one delta (raising its error, if it has one); True when it was the last."""
        if delta.error is not None:
            raise delta.error
        self.parts.append(delta.text)
        self.token_ids.extend(delta.token_ids)
        self.logprobs.extend(delta.logprobs)
        if delta.finish_reason is None:
            return False
        self.finish_reason, self.usage, self.timings = delta.finish_reason, delta.usage, dict(delta.timings)
        return True


def collect(deltas: Iterable[Delta]) -> Collected:
    """Read a stream to its end; BotframeworkError if it ended without a final delta."""
    out = Collected()
    for delta in deltas:
        if out.add(delta):
            break
    out.final()
    return out


async def collect_async(deltas: AsyncIterator[Delta], first: Delta | None = None) -> Collected:
    """Read an asyncio stream to its end, `first` (already read) included; a delta's error is raised."""
    out = Collected()
    delta = first if first is not None else await anext(deltas, None)
    while delta is not None and not out.add(delta):
        delta = await anext(deltas, None)
    return out
