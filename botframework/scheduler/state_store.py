"""KV states moved out of the cache: bytes in host RAM (LRU), spilled to disk, by key.

    slot freed -> prepare_save(key, tokens) -> engine saves the state -> complete_save(key, bytes)
        -> RAM (budget) -> oldest spilled to <dir>/<hash>.kv (budget) -> oldest dropped
    later -> take(key) -> a RESTORE op into a free slot

SessionStore (session_store.py) keys them by session id; PrefixStore (prefix_store.py) keeps
idle prompt prefixes and finds the one a new prompt starts with.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from botframework.engine.step import common_prefix_len

__all__ = ["StateStore", "common_prefix_len"]


@dataclass
class _Stored:
    tokens: list[int]
    data: bytes | None = None     # in RAM
    path: Path | None = None      # on disk
    num_bytes: int = 0


class StateStore:
    def __init__(self, ram_budget_bytes: int = 512 << 20, disk_budget_bytes: int = 2 << 30,
                 disk_dir: Path | None = None) -> None:
        self.ram_budget_bytes = ram_budget_bytes
        self.disk_budget_bytes = disk_budget_bytes
        self._disk_dir = disk_dir
        self._entries: OrderedDict[str, _Stored] = OrderedDict()
        self._pending: dict[str, list[int]] = {}
        self.num_dropped = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The stored keys, oldest first."""
        return list(self._entries)

    def is_pending(self, key: str) -> bool:
        return key in self._pending

    def prepare_save(self, key: str, tokens: list[int]) -> None:
        self._pending[key] = tokens

    def complete_save(self, key: str, data: bytes) -> None:
        tokens = self._pending.pop(key, None)
        if tokens is None:
            return
        self._discard(key)
        self._entries[key] = _Stored(tokens=tokens, data=data, num_bytes=len(data))
        self._enforce_budgets()

    def take(self, key: str) -> tuple[bytes, list[int]]:
        entry = self._entries.pop(key)
        if entry.data is not None:
            return entry.data, entry.tokens
        assert entry.path is not None
        try:
            data = entry.path.read_bytes()
        except OSError:  # removed or unreadable since: the RESTORE fails, and only its request ends
            data = b""
        entry.path.unlink(missing_ok=True)
        return data, entry.tokens

    def num_tokens(self, key: str) -> int:
        return len(self._entries[key].tokens)

    def clear(self) -> None:
        for key in list(self._entries):
            self._discard(key)
        self._pending.clear()

    def drop(self, key: str) -> bool:
        self._pending.pop(key, None)
        return self._discard(key)

    def ram_bytes(self) -> int:
        return sum(e.num_bytes for e in self._entries.values() if e.data is not None)

    def disk_bytes(self) -> int:
        return sum(e.num_bytes for e in self._entries.values() if e.path is not None)

    def _discard(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.path is not None:
            entry.path.unlink(missing_ok=True)
        return entry is not None

    def _dir(self) -> Path:
        if self._disk_dir is None:
            self._disk_dir = Path(tempfile.mkdtemp(prefix="botframework-sessions-"))
        self._disk_dir.mkdir(parents=True, exist_ok=True)
        return self._disk_dir

    def _enforce_budgets(self) -> None:
        for key, entry in list(self._entries.items()):  # oldest first
            if self.ram_bytes() <= self.ram_budget_bytes:
                break
            if entry.data is None:
                continue
            if self.disk_budget_bytes > 0:
                name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv"
                path = self._dir() / name
                with open(path, "wb") as handle:
                    handle.write(entry.data)
                    os.fsync(handle.fileno())
                entry.path, entry.data = path, None
            else:
                self._discard(key)
                self.num_dropped += 1
        for key, entry in list(self._entries.items()):
            if self.disk_bytes() <= self.disk_budget_bytes:
                break
            if entry.path is not None:
                self._discard(key)
                self.num_dropped += 1
