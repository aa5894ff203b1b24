"""Logits of the last decode as numpy arrays over llama.cpp's own buffer: no copy.

    Context.decode(batch) -> llama.cpp writes one row of n_vocab float32 per output (a batch
        token added with logits wanted), rows in batch order
    logits_view(context, i)           row of batch token i: a 1-D view
    logits_view(context, [i, j, ...]) those rows as a 2-D view (evenly spaced rows: e.g. all
                                      outputs, in batch order)
    output_rows(context, indices)     any rows: a 2-D view spanning them, and each one's row in it
    outputs_view(context, first, last, n)  all n outputs of the last batch (first..last token)

A view reads and writes llama.cpp's buffer: a change is what a SamplerChain then samples
from (Engine's logits processors work so). It is valid until the context's next decode or its
close(); use it after that and it reads garbage or crashes, so `.copy()` what you keep. The
calls themselves raise the package's errors: ClosedError for a closed context,
InvalidRequestError for a batch token that has no logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from botframework.errors import InvalidRequestError
from botframework.native._lib import ffi, lib

if TYPE_CHECKING:
    from botframework.native.context import Context

__all__ = ["logits_view", "output_rows", "outputs_view"]


def _address(handle: object, index: int) -> int:
    ptr = lib().llama_get_logits_ith(handle, index)
    if ptr == ffi.NULL:
        raise InvalidRequestError(f"batch token {index} has no logits in the last decode (add it with "
                                  "logits wanted, e.g. add_sequence(..., logits_last=True))", param="batch_index")
    return int(ffi.cast("uintptr_t", ptr))


def _span(address: int, num_rows: int, n_vocab: int) -> np.ndarray:
    buffer = ffi.buffer(ffi.cast("float *", address), num_rows * n_vocab * 4)
    return np.frombuffer(buffer, dtype=np.float32).reshape(num_rows, n_vocab)


def outputs_view(context: Context, first_index: int, last_index: int, num_outputs: int) -> np.ndarray | None:
    """The (num_outputs, n_vocab) view from batch token first_index's logits to last_index's,
    when those lie num_outputs - 1 rows apart, as the outputs of one batch do (llama.cpp keeps
    them in batch order); None otherwise. Two native calls and no per-row work: the engine's
    path right after a decode."""
    handle = context.handle
    n_vocab = context.model.n_vocab
    first = _address(handle, first_index)
    if num_outputs == 1:
        return _span(first, 1, n_vocab)
    if _address(handle, last_index) - first != (num_outputs - 1) * n_vocab * 4:
        return None
    return _span(first, num_outputs, n_vocab)


def output_rows(context: Context, batch_indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(span, rows): a writable (m, n_vocab) view over llama.cpp's logits from the lowest to
    the highest of these outputs, and each batch index's row in it (int64, in the order
    given). `span[rows[k]]` is batch token batch_indices[k]'s logits; a slice of span is a
    view, fancy indexing a copy (write it back with span[rows] = ...)."""
    if not len(batch_indices):
        raise InvalidRequestError("no batch indices given", param="batch_index")
    handle = context.handle  # ClosedError first
    n_vocab = context.model.n_vocab
    row_bytes = n_vocab * 4
    addresses = [_address(handle, int(i)) for i in batch_indices]
    base = min(addresses)
    offsets = np.array(addresses, dtype=np.int64) - base
    rows = offsets // row_bytes
    if (offsets % row_bytes).any():  # never with llama.cpp's layout; refuse rather than misread
        raise InvalidRequestError("logits rows are not laid out one after another", param="batch_index")
    return _span(base, int(rows.max()) + 1, n_vocab), rows


def logits_view(context: Context, batch_indices: int | Sequence[int]) -> np.ndarray:
    """The logits of batch token(s) from the context's last decode, as a writable view.

    An int: that token's row, shape (n_vocab,). A sequence: shape (len, n_vocab), row k for
    batch_indices[k]; the rows must be evenly spaced in llama.cpp's buffer, which they are for
    the batch's outputs taken in batch order (all of them, or every k-th); for any other
    subset use output_rows and index its span (a copy). InvalidRequestError when a token has
    no logits or the rows are not evenly spaced; ClosedError when the context is closed."""
    if isinstance(batch_indices, (int, np.integer)):
        handle = context.handle
        n_vocab = context.model.n_vocab
        return _span(_address(handle, int(batch_indices)), 1, n_vocab)[0]
    span, rows = output_rows(context, batch_indices)
    first = int(rows[0])
    if len(rows) == 1:
        return span[first:first + 1]
    step = int(rows[1] - rows[0])
    if step <= 0 or (np.diff(rows) != step).any():
        raise InvalidRequestError("these outputs are not evenly spaced rows of the logits buffer: ask for them in "
                                  "batch order, or index output_rows()' span (a copy)", param="batch_index")
    return span[first: int(rows[-1]) + 1: step]
