"""KVMemory: per-sequence operations on a context's KV cache (llama_memory_*)."""

from __future__ import annotations

from typing import Any

from botframework.native._lib import lib


class KVMemory:
    """Positions p0..p1 are half-open [p0, p1); -1 means 'to the end' / 'from the start'."""

    def __init__(self, handle: Any, owner: Any) -> None:
        self._handle = handle
        self._owner = owner  # keeps the context alive while this view exists

    def clear(self, data: bool = True) -> None:
        lib().llama_memory_clear(self._handle, data)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove tokens of seq_id in [p0, p1). False if a partial removal is impossible."""
        return bool(lib().llama_memory_seq_rm(self._handle, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Share src's cells in [p0, p1) with dst (no copy of KV data in a unified cache)."""
        lib().llama_memory_seq_cp(self._handle, src, dst, p0, p1)

    def seq_keep(self, seq_id: int) -> None:
        lib().llama_memory_seq_keep(self._handle, seq_id)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions of seq_id in [p0, p1) by delta (context shift)."""
        lib().llama_memory_seq_add(self._handle, seq_id, p0, p1, delta)

    def pos_min(self, seq_id: int) -> int:
        return int(lib().llama_memory_seq_pos_min(self._handle, seq_id))

    def pos_max(self, seq_id: int) -> int:
        """Largest position stored for seq_id, or -1 when it has none."""
        return int(lib().llama_memory_seq_pos_max(self._handle, seq_id))

    def can_shift(self) -> bool:
        return bool(lib().llama_memory_can_shift(self._handle))
