"""Huge pages for weights and KV cache: what is collapsed, and that nothing else changes.

    anonymous_mappings  sees a fresh anonymous mmap, not file mappings
    collapse            a populated mapping of 4 huge pages -> huge pages (read back from smaps)
    Model/Context       hugepages=True puts the weights and KV cache in huge pages, and
                        the logits are bit-identical to the mmap'd model's
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from botframework.native import (
    Batch,
    Context,
    ContextParams,
    Model,
    ModelParams,
)
from botframework.native import _hugepages as hugepages

needs_thp = pytest.mark.skipif(not hugepages.available(),
                               reason="no transparent huge pages that MADV_COLLAPSE can fill (THP off, Linux < 6.1)")


def _private_anonymous(size: int) -> mmap.mmap:
    """Memory like malloc's large blocks (Python's mmap(-1, ...) alone is shared memory)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _anon_huge_kib(start: int, end: int) -> int:
    """AnonHugePages of the mappings overlapping [start, end), from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < end and start < hi
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_anonymous_mappings_include_a_fresh_anonymous_mmap() -> None:
    buf = _private_anonymous(4 << 20)
    try:
        start = _address(buf)
        regions = hugepages.anonymous_mappings()
        assert any(lo <= start < hi for lo, hi in regions.items())
        assert all(hi > lo for lo, hi in regions.items())
    finally:
        buf.close()


@needs_thp
def test_collapse_turns_a_populated_mapping_into_huge_pages() -> None:
    size = 4 * hugepages.huge_page_size()
    buf = _private_anonymous(size)
    try:
        buf.write(b"\x01" * size)  # populated in 4 KiB pages
        start = _address(buf)
        collapsed = hugepages.collapse(start, start + size)
        assert collapsed >= size - 2 * hugepages.huge_page_size()  # all but the unaligned ends
        assert _anon_huge_kib(start, start + size) * 1024 >= collapsed
        assert buf[:4] == b"\x01" * 4 and buf[size - 1] == 1  # the contents are kept
    finally:
        buf.close()


def test_collapse_of_less_than_one_aligned_huge_page_does_nothing() -> None:
    assert hugepages.collapse(4096, 4096 + (1 << 20)) == 0


def _first_logits(model: Model) -> np.ndarray:
    ctx = Context(model, ContextParams(n_ctx=512, n_batch=64, n_seq_max=1, n_threads=2, n_threads_batch=2))
    try:
        batch = Batch(64)
        batch.add_sequence(model.tokenize("The capital of France is"), 0, 0, logits_last=True)
        ctx.decode(batch)
        return ctx.logits_ith(batch.n_tokens - 1).copy()
    finally:
        ctx.close()


def test_model_in_huge_pages_computes_the_same_logits(model_path: Path) -> None:
    mapped = Model(model_path, ModelParams(hugepages=False))
    try:
        assert not mapped.hugepages and mapped.hugepage_bytes == 0
        expected = _first_logits(mapped)
    finally:
        mapped.close()
    huge = Model(model_path, ModelParams(hugepages=True))
    try:
        assert huge.hugepages == hugepages.available()
        if huge.hugepages:
            # all of the weights but the unaligned ends of their buffer
            assert huge.hugepage_bytes >= huge.size_bytes - (4 << 20)
            ctx = Context(huge, ContextParams(n_ctx=4096, n_seq_max=4))
            try:
                assert ctx.hugepage_bytes > 0  # the KV cache
            finally:
                ctx.close()
        assert np.array_equal(_first_logits(huge), expected)
    finally:
        huge.close()
