"""Idle prompt prefixes moved out of the KV cache into host RAM, and found again by prompt.

    idle slot's cache (no session) --offload: new_key(), prepare_save--> engine saves its state
        --complete_save--> RAM (LRU within prefix_cache_bytes; no disk: recomputing is cheaper)
    a new prompt --longest_prefix--> the stored prefix it starts with --take--> RESTORE

All sequences share one KV buffer and attention spans every cell up to the highest in use, so
cells kept for idle prefixes slow every decode: llama-server moves them out the same way.
"""

from __future__ import annotations

import itertools

from botframework.scheduler.state_store import StateStore, common_prefix_len


class PrefixStore(StateStore):
    def __init__(self, ram_budget_bytes: int) -> None:
        super().__init__(ram_budget_bytes, disk_budget_bytes=0)
        self._keys = itertools.count()
        self.num_offloads = 0   # prefixes moved out of the cache
        self.num_restores = 0   # ...and brought back for a prompt that starts with one

    def new_key(self) -> str:
        return f"prefix-{next(self._keys)}"

    def longest_prefix(self, tokens: list[int] | tuple[int, ...]) -> tuple[str | None, int]:
        """The stored entry sharing the longest prefix with `tokens`, and that length."""
        best, best_n = None, 0
        for key, entry in self._entries.items():
            n = common_prefix_len(entry.tokens, tokens)
            if n > best_n:
                best, best_n = key, n
        return best, best_n
