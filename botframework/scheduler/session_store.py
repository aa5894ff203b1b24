"""Evicted chat sessions (and idle prompt prefixes): KV state bytes in host RAM (LRU), spilled to disk.

    slot evicted -> prepare_save(tokens) -> engine saves state -> complete_save(bytes)
        -> RAM (budget) -> oldest spilled to <dir>/<hash>.kv (budget) -> oldest dropped
    next turn -> take() -> RESTORE op into a free slot
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Stored:
    tokens: list[int]
    data: bytes | None = None     # in RAM
    path: Path | None = None      # on disk
    num_bytes: int = 0


class SessionStore:
    def __init__(self, ram_budget_bytes: int = 512 << 20, disk_budget_bytes: int = 2 << 30,
                 disk_dir: Path | None = None) -> None:
        self.ram_budget_bytes = ram_budget_bytes
        self.disk_budget_bytes = disk_budget_bytes
        self._disk_dir = disk_dir
        self._entries: OrderedDict[str, _Stored] = OrderedDict()
        self._pending: dict[str, list[int]] = {}
        self.num_dropped = 0

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def is_pending(self, session_id: str) -> bool:
        return session_id in self._pending

    def prepare_save(self, session_id: str, tokens: list[int]) -> None:
        self._pending[session_id] = tokens

    def complete_save(self, session_id: str, data: bytes) -> None:
        tokens = self._pending.pop(session_id, None)
        if tokens is None:
            return
        self._discard(session_id)
        self._entries[session_id] = _Stored(tokens=tokens, data=data, num_bytes=len(data))
        self._enforce_budgets()

    def take(self, session_id: str) -> tuple[bytes, list[int]]:
        entry = self._entries.pop(session_id)
        if entry.data is not None:
            return entry.data, entry.tokens
        assert entry.path is not None
        data = entry.path.read_bytes()
        entry.path.unlink(missing_ok=True)
        return data, entry.tokens

    def longest_prefix(self, tokens: list[int] | tuple[int, ...]) -> tuple[str | None, int]:
        """The stored entry sharing the longest prefix with `tokens`, and that length."""
        best, best_n = None, 0
        for key, entry in self._entries.items():
            n = common_prefix_len(entry.tokens, tokens)
            if n > best_n:
                best, best_n = key, n
        return best, best_n

    def num_tokens(self, key: str) -> int:
        return len(self._entries[key].tokens)

    def clear(self) -> None:
        for key in list(self._entries):
            self._discard(key)
        self._pending.clear()

    def drop(self, session_id: str) -> bool:
        self._pending.pop(session_id, None)
        return self._discard(session_id)

    def info(self, session_id: str) -> dict[str, object] | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        return {"state": "evicted", "location": "ram" if entry.data is not None else "disk",
                "num_cached_tokens": len(entry.tokens), "num_bytes": entry.num_bytes}

    def ram_bytes(self) -> int:
        return sum(e.num_bytes for e in self._entries.values() if e.data is not None)

    def disk_bytes(self) -> int:
        return sum(e.num_bytes for e in self._entries.values() if e.path is not None)

    def _discard(self, session_id: str) -> bool:
        entry = self._entries.pop(session_id, None)
        if entry is not None and entry.path is not None:
            entry.path.unlink(missing_ok=True)
        return entry is not None

    def _dir(self) -> Path:
        if self._disk_dir is None:
            self._disk_dir = Path(tempfile.mkdtemp(prefix="botframework-sessions-"))
        self._disk_dir.mkdir(parents=True, exist_ok=True)
        return self._disk_dir

    def _enforce_budgets(self) -> None:
        for session_id, entry in list(self._entries.items()):  # oldest first
            if self.ram_bytes() <= self.ram_budget_bytes:
                break
            if entry.data is None:
                continue
            if self.disk_budget_bytes > 0:
                name = hashlib.sha256(session_id.encode()).hexdigest()[:32] + ".kv"
                path = self._dir() / name
                with open(path, "wb") as handle:
                    handle.write(entry.data)
                    os.fsync(handle.fileno())
                entry.path, entry.data = path, None
            else:
                self._discard(session_id)
                self.num_dropped += 1
        for session_id, entry in list(self._entries.items()):
            if self.disk_bytes() <= self.disk_budget_bytes:
                break
            if entry.path is not None:
                self._discard(session_id)
                self.num_dropped += 1


def common_prefix_len(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    """Length of the common prefix: a binary search over slice comparisons (done in C)."""
    if type(a) is not type(b):
        a, b = list(a), list(b)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
