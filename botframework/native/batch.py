"""Batch: a llama_batch whose arrays are numpy buffers we own.

    numpy token/pos/n_seq_id/seq_id/logits  --pointers-->  llama_batch (by value to decode)

Filling is vectorised (add_sequence writes a whole prompt chunk at once), so building a
step's batch costs microseconds, not a Python loop per token.

Misuse is an exception, found where it costs nothing per token: more tokens than the
capacity is an InvalidRequestError and adding to a closed batch (capacity 0) a ClosedError,
both from the one capacity comparison each add makes anyway. Sequence ids are checked by
llama_decode before it changes anything; Context.decode then names the bad one
(check_seq_ids) in an InvalidRequestError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from botframework.errors import ClosedError, InvalidRequestError
from botframework.native._lib import ffi
from botframework.native._owned import NativeHandle


class Batch(NativeHandle):
    _what = "batch"
    _frees = (("_handle", None), ("_seq_ptrs", None))  # cffi's memory: closing drops it
    _seq_ptrs: Any = None

    def __init__(self, capacity: int, num_seq_per_token: int = 1) -> None:
        if capacity < 1 or num_seq_per_token < 1:
            raise ValueError("capacity and num_seq_per_token must be >= 1")
        self.capacity = capacity
        self.num_seq_per_token = num_seq_per_token
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, num_seq_per_token), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.n_tokens = 0
        base = int(ffi.cast("uintptr_t", ffi.from_buffer(self.seq_id)))
        row = num_seq_per_token * 4
        self._seq_ptrs = ffi.new("llama_seq_id *[]", capacity)
        for i in range(capacity):
            self._seq_ptrs[i] = ffi.cast("llama_seq_id *", base + i * row)
        native = ffi.new("llama_batch *")
        native.token = ffi.from_buffer("llama_token[]", self.token)
        native.embd = ffi.NULL
        native.pos = ffi.from_buffer("llama_pos[]", self.pos)
        native.n_seq_id = ffi.from_buffer("int32_t[]", self.n_seq_id)
        native.seq_id = self._seq_ptrs
        native.logits = ffi.from_buffer("int8_t[]", self.logits)
        self._handle: Any = native

    def _on_close(self) -> None:
        self.capacity = 0  # every add now fails the capacity check, whose error path says "closed"
        self.n_tokens = 0

    def clear(self) -> None:
        self.n_tokens = 0

    @property
    def num_free(self) -> int:
        return self.capacity - self.n_tokens

    def _refuse(self, num_tokens: int) -> NoReturn:
        """The capacity check failed: closed, or really full."""
        if self._handle is None:
            raise ClosedError("batch is closed")
        raise InvalidRequestError(
            f"batch is full: {self.n_tokens} + {num_tokens} tokens exceed its capacity of {self.capacity}",
            param="tokens")

    def add(self, token: int, pos: int, seq_ids: int | Sequence[int], want_logits: bool) -> int:
        """Append one token; returns its index in the batch (the logits index if wanted)."""
        if self.n_tokens >= self.capacity:
            self._refuse(1)
        ids = [seq_ids] if isinstance(seq_ids, int) else list(seq_ids)
        if not 1 <= len(ids) <= self.num_seq_per_token:
            raise InvalidRequestError(f"a token belongs to 1..{self.num_seq_per_token} sequences", param="seq_ids")
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
            raise InvalidRequestError("empty token run", param="tokens")
        if self.n_tokens + n > self.capacity:
            self._refuse(n)
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

    def check_seq_ids(self, n_seq_max: int) -> None:
        """InvalidRequestError naming the first token with a sequence id outside
        0..n_seq_max-1 (a context's n_seq_max); nothing when all are inside."""
        n = self.n_tokens
        ids = self.seq_id[:n]
        used = np.arange(self.num_seq_per_token) < self.n_seq_id[:n, None]
        bad = used & ((ids < 0) | (ids >= n_seq_max))
        if bad.any():
            i, k = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidRequestError(
                f"sequence id {int(ids[i, k])} of batch token {i} out of range (0..{n_seq_max - 1})",
                param="seq_id")

    def native(self) -> Any:
        """The llama_batch (by value) for llama_decode; ClosedError once closed."""
        native = self.handle
        native.n_tokens = self.n_tokens
        return native[0]
