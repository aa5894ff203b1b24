"""Batch: a llama_batch whose arrays are numpy buffers we own.

    numpy token/pos/n_seq_id/seq_id/logits  --pointers-->  llama_batch (by value to decode)

Filling is vectorised (add_sequence writes a whole prompt chunk at once), so building a
step's batch costs microseconds, not a Python loop per token.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from botframework.native._lib import ffi


class Batch:
    def __init__(self, capacity: int, n_seq_per_token: int = 1) -> None:
        if capacity < 1 or n_seq_per_token < 1:
            raise ValueError("capacity and n_seq_per_token must be >= 1")
        self.capacity = capacity
        self.n_seq_per_token = n_seq_per_token
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, n_seq_per_token), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.n_tokens = 0
        base = int(ffi.cast("uintptr_t", ffi.from_buffer(self.seq_id)))
        row = n_seq_per_token * 4
        self._seq_ptrs = ffi.new("llama_seq_id *[]", capacity)
        for i in range(capacity):
            self._seq_ptrs[i] = ffi.cast("llama_seq_id *", base + i * row)
        self._native = ffi.new("llama_batch *")
        self._native.token = ffi.from_buffer("llama_token[]", self.token)
        self._native.embd = ffi.NULL
        self._native.pos = ffi.from_buffer("llama_pos[]", self.pos)
        self._native.n_seq_id = ffi.from_buffer("int32_t[]", self.n_seq_id)
        self._native.seq_id = self._seq_ptrs
        self._native.logits = ffi.from_buffer("int8_t[]", self.logits)

    def clear(self) -> None:
        self.n_tokens = 0

    @property
    def free(self) -> int:
        return self.capacity - self.n_tokens

    def add(self, token: int, pos: int, seq_ids: int | Sequence[int], want_logits: bool) -> int:
        """Append one token; returns its index in the batch (the logits index if wanted)."""
        if self.n_tokens >= self.capacity:
            raise ValueError("batch is full")
        ids = [seq_ids] if isinstance(seq_ids, int) else list(seq_ids)
        if not 1 <= len(ids) <= self.n_seq_per_token:
            raise ValueError(f"a token belongs to 1..{self.n_seq_per_token} sequences")
        i = self.n_tokens
        self.token[i] = token
        self.pos[i] = pos
        self.n_seq_id[i] = len(ids)
        self.seq_id[i, : len(ids)] = ids
        self.logits[i] = 1 if want_logits else 0
        self.n_tokens += 1
        return i

    def add_sequence(self, tokens: Sequence[int] | np.ndarray, start_pos: int, seq_id: int,
                     logits_last: bool) -> int:
        """Append a run of tokens of one sequence; returns the index of the last one."""
        n = len(tokens)
        if n == 0:
            raise ValueError("empty token run")
        if self.n_tokens + n > self.capacity:
            raise ValueError("batch is full")
        lo, hi = self.n_tokens, self.n_tokens + n
        if n == 1:  # a decode step's token: item writes, no temporary arrays
            self.token[lo] = tokens[0]
            self.pos[lo] = start_pos
            self.n_seq_id[lo] = 1
            self.seq_id[lo, 0] = seq_id
            self.logits[lo] = logits_last
        else:
            self.token[lo:hi] = tokens
            self.pos[lo:hi] = np.arange(start_pos, start_pos + n, dtype=np.int32)
            self.n_seq_id[lo:hi] = 1
            self.seq_id[lo:hi, 0] = seq_id
            self.logits[lo:hi] = 0
            if logits_last:
                self.logits[hi - 1] = 1
        self.n_tokens = hi
        return hi - 1

    def native(self) -> Any:
        self._native.n_tokens = self.n_tokens
        return self._native[0]
