"""Stored and running responses, in memory, per app.

    finished response (store: true) --put--> LRU of Stored(response JSON, conversation, session)
        bounded by MAX_STORED_RESPONSES entries and MAX_STORED_BYTES of their JSON: the least
        recently used go first; nothing outlives the process
    running response --start--> Running (its snapshot, an Event set when it ends), so that
        POST /v1/responses/{id}/cancel can stop it and answer with how it ended

A conversation's KV state lives in the model under a session id shared by the responses of
one chain (previous_response_id): the next turn prefills only its new tokens. The session is
counted once per stored response and once per running one that uses it; when the count drops
to zero (evicted, deleted, or a store=false turn ends), its id is handed back to be dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_STORED_RESPONSES = 1024
MAX_STORED_BYTES = 64 << 20  # the JSON size of the stored responses and their conversations


@dataclass
class Stored:
    response: dict[str, Any]          # the Response object, as GET returns it
    messages: list[dict[str, Any]]    # the conversation through its output (instructions excluded)
    session_id: str | None
    num_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.num_bytes:
            self.num_bytes = len(json.dumps([self.response, self.messages], ensure_ascii=False))


@dataclass
class Running:
    response: dict[str, Any]          # the latest snapshot: in_progress, then how it ended
    session_id: str | None
    store: bool = True                # shown by GET while it runs (a store=false one is not)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ResponseStore:
    def __init__(self, max_responses: int = MAX_STORED_RESPONSES, max_bytes: int = MAX_STORED_BYTES) -> None:
        if max_responses < 1 or max_bytes < 1:
            raise ValueError("the response store needs room for at least one response")
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self.num_evicted = 0
        self._stored: OrderedDict[str, Stored] = OrderedDict()
        self._running: dict[str, Running] = {}
        self._session_refs: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()  # sessions being dropped in the background

    def __len__(self) -> int:
        return len(self._stored)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._stored

    # -- stored -----------------------------------------------------------------------------
    def get(self, response_id: str) -> Stored | None:
        stored = self._stored.get(response_id)
        if stored is not None:
            self._stored.move_to_end(response_id)
        return stored

    def put(self, response_id: str, stored: Stored) -> list[str]:
        """Keep it (most recently used); the sessions no longer used by what was evicted to make
        room. One larger than the whole budget is not kept (its own session is kept counted by
        its running entry until that ends)."""
        freed = self.pop(response_id)
        if stored.num_bytes > self.max_bytes:
            self.num_evicted += 1
            return freed
        self._stored[response_id] = stored
        self.num_bytes += stored.num_bytes
        self._hold(stored.session_id)
        while len(self._stored) > self.max_responses or self.num_bytes > self.max_bytes:
            oldest = next(iter(self._stored))
            freed += self.pop(oldest)
            self.num_evicted += 1
        return freed

    def pop(self, response_id: str) -> list[str]:
        """Forget a stored response; its session if nothing else uses it."""
        stored = self._stored.pop(response_id, None)
        if stored is None:
            return []
        self.num_bytes -= stored.num_bytes
        return self._release(stored.session_id)

    # -- running ----------------------------------------------------------------------------
    def running(self, response_id: str) -> Running | None:
        return self._running.get(response_id)

    def start(self, response_id: str, running: Running) -> None:
        self._running[response_id] = running
        self._hold(running.session_id)

    def end(self, response_id: str, final: dict[str, Any] | None = None) -> list[str]:
        """The response has ended (its final snapshot, if it got one): wake whoever waits
        for it; the sessions nothing uses any more. Idempotent."""
        running = self._running.pop(response_id, None)
        if running is None:
            return []
        if final is not None:
            running.response = final
        running.done.set()
        return self._release(running.session_id)

    # -- sessions ---------------------------------------------------------------------------
    def session_in_use(self, session_id: str) -> bool:
        return self._session_refs[session_id] > 0

    def _hold(self, session_id: str | None) -> None:
        if session_id is not None:
            self._session_refs[session_id] += 1

    def _release(self, session_id: str | None) -> list[str]:
        if session_id is None:
            return []
        self._session_refs[session_id] -= 1
        if self._session_refs[session_id] > 0:
            return []
        del self._session_refs[session_id]
        return [session_id]
