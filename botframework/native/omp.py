"""OpenMP worker threads: let a thread's go when it stops computing.

ggml's CPU backend runs a graph in an OpenMP parallel region, and libgomp keeps a pool of
worker threads for every thread that has started one (its master). When libgomp manages more
threads than there are CPUs, every thread waiting at a barrier spins far less before it sleeps
in the kernel ("throttled": 1,000 spins instead of GOMP_SPINCOUNT, see _lib.py), and many of
a graph's barriers then cost a futex sleep and wake. A server has several masters: each
model's engine thread, and the event loop, which computes a lone short request itself
(ModelWorker's inline paths). With two of them on a 2-core machine every decode was throttled
for good: all-MiniLM-L6-v2's one-sentence decode took 3.7 ms with one pool alive and 4.2 ms
with a second, idle one (12%); a 256-token prefill of SmolLM2 ~3%.

So a thread that stops computing lets its pool go: an engine thread idle for 5 ms, and an
event loop that computed inline turns once its engine thread has work again (ModelWorker).
One-sentence requests to an embedding server (bench_embeddings' one at a time): 1.09x the
inputs/s of the same server keeping its pools, 8 alternating rounds, 8 ahead.

release_compute_threads() frees the calling thread's pool (OpenMP 5.0's
omp_pause_resource_all(omp_pause_soft)); its next parallel region starts a new one (one
thread creation, ~0.1 ms). A no-op where llama.cpp was built without OpenMP.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_OMP_PAUSE_SOFT = 1


_gomp: Any = None


def release_compute_threads() -> bool:
    """Free the calling thread's OpenMP worker threads (call it outside any decode); False
    where libgomp is not loaded (a build without OpenMP) or refused (a parallel region is
    running on this thread)."""
    global _gomp
    if _gomp is None:
        try:  # libgomp as the compiled module loaded it; never loaded here (RTLD_NOLOAD)
            _gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            return False
    return bool(_gomp.omp_pause_resource_all(_OMP_PAUSE_SOFT) == 0)
