"""Evicted chat sessions: their KV state in host RAM, spilled to disk (a StateStore by session id).

    idle session slot evicted -> prepare_save(session_id, tokens) -> ... -> complete_save
    the session's next turn -> take(session_id) -> RESTORE into a free slot
"""

from __future__ import annotations

from botframework.scheduler.state_store import StateStore, common_prefix_len

__all__ = ["SessionStore", "common_prefix_len"]


class SessionStore(StateStore):
    def info(self, session_id: str) -> dict[str, object] | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        return {"state": "evicted", "location": "ram" if entry.data is not None else "disk",
                "num_cached_tokens": len(entry.tokens), "num_bytes": entry.num_bytes}
