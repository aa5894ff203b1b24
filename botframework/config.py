"""How a loaded model runs: its context, slots, threads and caches. Plain data, no native code.

    WorkerConfig --ModelWorker--> ModelParams, ContextParams (native) + SchedulerConfig

The server's settings and LocalLLM's arguments both become one WorkerConfig
(ServerSettings.worker_config, LocalLLM.__init__), so a model runs the same way behind either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerConfig", "default_threads"]


def default_threads() -> tuple[int, int]:
    """(decode threads, prompt threads): physical cores for decode, all usable CPUs for prompt."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover
        physical = usable
    return max(1, min(physical, usable)), max(1, usable)


@dataclass(frozen=True)
class WorkerConfig:
    n_ctx: int = 8192
    num_slots: int = 8
    max_batch_tokens: int = 512
    n_threads: int | None = None           # None: default_threads()
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    max_waiting: int = 256
    session_ram_bytes: int = 512 << 20
    session_disk_bytes: int = 2 << 30
    session_dir: Path | None = None
    prefix_cache_bytes: int = 1 << 30      # idle prompt caches in host RAM (SchedulerConfig)
    flash_attn: str = "auto"
    hugepages: bool = True                 # weights and KV cache in 2 MiB pages (ModelParams)
    embed_piece_tokens: int = 128          # a causal model's embedding input: tokens per engine-loop turn
    # at most, for event loops to send a request's first or last token (RequestHandle.wait_handled)
    handoff_wait_s: float = 0.003
