"""KVMemory: per-sequence operations on a context's KV cache (llama_memory_*).

    Context.memory -> KVMemory(context) -> llama_get_memory(context.handle) -> llama_memory_*

It owns nothing: the cache belongs to the context. Every operation asks the context for its
handle (ClosedError once it is closed) and checks sequence ids first, against the context's
n_seq_max: llama.cpp aborts the process (GGML_ASSERT) on an id >= 256 or < -1, and takes one
in n_seq_max..255 silently although no batch of this context may use it; both are an
InvalidRequestError here. These run per request, not per token: the checks cost nothing that
matters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botframework.native._lib import lib

if TYPE_CHECKING:
    from botframework.native.context import Context


class KVMemory:
    """Positions p0..p1 are half-open [p0, p1); -1 means 'to the end' / 'from the start'."""

    __slots__ = ("_context",)

    def __init__(self, context: Context) -> None:
        self._context = context  # keeps the context alive while this view exists

    @property
    def handle(self) -> Any:
        """The context's llama_memory_t; ClosedError once the context is closed."""
        return lib().llama_get_memory(self._context.handle)

    def clear(self, data: bool = True) -> None:
        lib().llama_memory_clear(self.handle, data)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove tokens of seq_id in [p0, p1) (seq_id -1: of every sequence). False if a
        partial removal is impossible."""
        if seq_id != -1:
            self._context.check_seq_id(seq_id)
        return bool(lib().llama_memory_seq_rm(self.handle, seq_id, p0, p1))

    def seq_cp(self, src_seq_id: int, dst_seq_id: int, p0: int = -1, p1: int = -1) -> None:
        """Share src_seq_id's cells in [p0, p1) with dst_seq_id (no copy of KV data in a
        unified cache)."""
        self._context.check_seq_id(src_seq_id, "src_seq_id")
        self._context.check_seq_id(dst_seq_id, "dst_seq_id")
        lib().llama_memory_seq_cp(self.handle, src_seq_id, dst_seq_id, p0, p1)

    def seq_keep(self, seq_id: int) -> None:
        self._context.check_seq_id(seq_id)
        lib().llama_memory_seq_keep(self.handle, seq_id)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions of seq_id in [p0, p1) by delta (context shift)."""
        self._context.check_seq_id(seq_id)
        lib().llama_memory_seq_add(self.handle, seq_id, p0, p1, delta)

    def pos_min(self, seq_id: int) -> int:
        self._context.check_seq_id(seq_id)
        return int(lib().llama_memory_seq_pos_min(self.handle, seq_id))

    def pos_max(self, seq_id: int) -> int:
        """Largest position stored for seq_id, or -1 when it has none."""
        self._context.check_seq_id(seq_id)
        return int(lib().llama_memory_seq_pos_max(self.handle, seq_id))

    def can_shift(self) -> bool:
        return bool(lib().llama_memory_can_shift(self.handle))
