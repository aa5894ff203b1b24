"""What a request's consumer sees: Delta events through a RequestHandle.

    engine thread --publish(Delta)--> RequestHandle --iter / async iter--> caller

A handle is safe to consume from any thread, or from asyncio (the delta is handed to the
event loop with call_soon_threadsafe). Cancelling a handle asks the engine thread to free
the sequence at its next step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, cast

from botframework.errors import BotframeworkError


class FinishReason(Enum):
    STOP = "stop"              # EOS / end-of-generation token or a stop string
    LENGTH = "length"          # max_tokens or the context window reached
    CANCELLED = "cancelled"    # cancelled by the caller, a disconnect or a deadline
    ERROR = "error"            # the engine failed while running this request


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0      # prompt tokens reused from the KV cache (not recomputed)
    truncated_tokens: int = 0   # prompt tokens dropped by the overflow policy
    draft_tokens: int = 0       # speculative draft tokens verified for this request
    accepted_draft_tokens: int = 0  # ...of which it kept (completion tokens that cost no step of their own)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    request_id: str
    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[tuple[int, float, tuple[tuple[int, float], ...]], ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: BotframeworkError | None = None


_END = object()


class _Deliveries(threading.local):
    """The `batched` block this thread is in, if any."""

    def __init__(self) -> None:
        self.block: batched | None = None


_deliveries = _Deliveries()


def _deliver(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for q, item in items:
        q.put_nowait(item)


class batched:
    """Hand every delta published inside the block to each event loop in one wake-up.

    One call_soon_threadsafe per loop per step instead of one per token: each wake-up is a
    pipe write plus a loop iteration, and on a machine with as many compute threads as cores
    the loop's work lands on a core that llama_decode is using.

    `with batched() as waits`: the list of asyncio handles whose first or last delta was
    published in the block, filled when it ends: see RequestHandle.wait_handled. (A class, not
    a generator: the engine thread enters it every step.)
    """

    def __init__(self) -> None:
        self.pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        self.waits: list[RequestHandle] = []  # what `with` gives: _listed, once the block ends
        self._listed: list[RequestHandle] = []  # handles given their first or last delta in the block

    def __enter__(self) -> list[RequestHandle]:
        if _deliveries.block is None:  # the outermost block delivers and lists; a nested one does nothing
            _deliveries.block = self
        return self.waits

    def __exit__(self, *exc: object) -> None:
        if _deliveries.block is not self:
            return
        _deliveries.block = None
        self.waits += self._listed
        for loop, items in self.pending.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass


class Taken(Enum):
    """What a DirectSink did with a delta."""

    NO = 0             # not taken: it goes to the consumer as usual, and the sink is detached
    YES = 1            # taken (written to the client); the sink takes the next one too
    YES_DETACH = 2     # taken, but the sink is detached: its bytes are still on their way


class DirectSink(Protocol):
    """Takes a running stream's deltas on the engine thread, instead of the event loop (see
    RequestHandle.attach_direct). Called with the handle's lock held: it must not block."""

    def take(self, delta: Delta) -> Taken: ...  # never given the last delta of a request


class NativeSink(DirectSink, Protocol):
    """A sink whose chunks native code can write (a run of steps, engine/step.py's
    NativeStream): sends_natively True."""

    sends_natively: bool

    # (fd, head, tail, rstrip, pending[, number, number_tail]) | None (NativeStream's fields); the
    # socket stays open until end_native(), even if the sink is closed meanwhile
    def begin_native(self) -> tuple[Any, ...] | None: ...

    def took_natively(self, delta: Delta, sent: Any) -> Taken: ...  # delta's text went out natively

    def end_native(self) -> None: ...


class RequestHandle:
    """Stream of Delta for one request; iterate it (sync or async), or cancel it.

    An asyncio consumer may attach a DirectSink between two deltas (a server writing a stream's
    chunks to the client's socket from the engine thread); publish hands it the next deltas
    until it declines one, which then goes to the consumer as usual.
    """

    def __init__(self, request_id: str, cancel: Callable[[str], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request_id = request_id
        self._cancel = cancel
        self._loop = loop
        self._sync: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._async: asyncio.Queue[Any] | None = asyncio.Queue() if loop is not None else None
        self.finished = threading.Event()
        self.finish_reason: FinishReason | None = None
        self._num_published = 0                  # deltas queued for the consumer (not a sink's)
        self._num_consumed = 0                   # ... and taken from the queue by the async consumer
        self._wait_for = 0                       # the delta wait_handled waits for (1: the first)
        self._handled = threading.Event()        # the asyncio consumer is done with that delta
        self._lock = threading.Lock()            # publish vs. attach_direct / detach_direct
        self._direct: DirectSink | None = None
        self._native: NativeSink | None = None   # the sink a run of steps writes for (begin_native)

    # called on the engine thread
    def publish(self, delta: Delta) -> None:
        with self._lock:
            direct = self._direct
            if direct is not None:  # the last delta (or an error) always goes to the consumer
                taken = direct.take(delta) if delta.finish_reason is None and delta.error is None else Taken.NO
                if taken is not Taken.YES:
                    self._direct = None
                if taken is not Taken.NO:
                    return
            self._enqueue(delta)

    def _enqueue(self, delta: Delta) -> None:
        items: list[Any] = [delta]
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            items.append(_END)
        block = _deliveries.block
        self._num_published += 1
        if block is not None and self._async is not None and (
                self._num_published == 1 or delta.finish_reason is not None):
            self._wait_for = self._num_published
            self._handled.clear()
            block._listed.append(self)
        for item in items:
            if self._async is not None and self._loop is not None:
                if block is not None:
                    block.pending.setdefault(self._loop, []).append((self._async, item))
                    continue
                try:
                    self._loop.call_soon_threadsafe(self._async.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    pass
            else:
                self._sync.put(item)
        if delta.finish_reason is not None:
            self.finished.set()

    # called by the asyncio consumer
    def attach_direct(self, sink: DirectSink) -> bool:
        """Let `sink` take the next deltas, if every delta published so far has been consumed
        (so what the sink writes cannot overtake them) and the request is still running."""
        with self._lock:
            if self._num_published != self._num_consumed or self.finished.is_set():
                return False
            self._direct = sink
            return True

    def detach_direct(self) -> None:
        """After this returns, the sink is not called again (until attached again)."""
        with self._lock:
            self._direct = None

    # -- a run of steps that writes the stream's chunks itself (engine/step.py's NativeStream) --
    def native_ready(self) -> bool:
        """Engine thread: an attached sink that native code can write for (read without the
        lock: begin_native decides)."""
        return bool(getattr(self._direct, "sends_natively", False))

    def begin_native(self) -> tuple[Any, ...] | None:
        """Engine thread, before a run: the attached sink's (fd, head, tail, rstrip, pending, ...)
        (see NativeSink), or None (no such sink, or it cannot now). end_native() after the run."""
        with self._lock:
            native = cast(NativeSink, self._direct) if self.native_ready() else None
            params = native.begin_native() if native is not None else None
            if params is not None:
                self._native = native
            return params

    def publish_native(self, delta: Delta, sent: Any) -> None:
        """Engine thread, after a run (and its end_native): `delta`'s text is what the run sent
        itself (StreamSent `sent`); the sink, still attached, accounts for it (detached: the
        stream was closed meanwhile, and it is dropped)."""
        with self._lock:
            direct = cast(NativeSink, self._direct) if self.native_ready() else None
            if direct is not None and direct.took_natively(delta, sent) is not Taken.YES:
                self._direct = None

    def end_native(self) -> None:
        """Engine thread: the run that begin_native was for is over (the sink may close its socket)."""
        with self._lock:
            native, self._native = self._native, None
        if native is not None:
            native.end_native()

    def cancel(self) -> None:
        if not self.finished.is_set():
            self._cancel(self.request_id)

    def wait_handled(self, timeout_s: float) -> bool:
        """Engine thread: wait (without the GIL) until the asyncio consumer has handled the
        first or last delta that batched() listed this handle for: it asks for the next one
        (a server has sent the headers and first chunk, or the last chunk, by then), or it
        stopped iterating.

        A client waits for the first token, and for the last before it sends its next request.
        If the engine went straight on to the next llama_decode, the event loop would wake to
        find the GIL taken, and then both cores busy with the decode: on 2 cores the first
        chunk reached the client most of a decode step after it was sampled. Waiting here lets
        the loop run on the engine's own core. Twice per request; waiting for every token
        instead was slower (the loop's work then never overlaps a decode)."""
        return self._handled.wait(timeout_s)

    def __iter__(self) -> Iterator[Delta]:
        if self._async is not None:
            raise RuntimeError("this handle was created for asyncio: use `async for`")
        try:
            while True:
                item = self._sync.get()
                if item is _END:
                    return
                yield item
        except GeneratorExit:
            self.cancel()
            raise

    async def __aiter__(self) -> AsyncIterator[Delta]:
        if self._async is None:
            raise RuntimeError("this handle was created without an event loop: use `for`")
        try:
            while True:
                if self._num_consumed and self._num_consumed >= self._wait_for:
                    self._handled.set()
                item = await self._async.get()
                if item is _END:
                    return
                self._num_consumed += 1
                yield item
        finally:
            self._handled.set()
            if not self.finished.is_set():
                self.cancel()
