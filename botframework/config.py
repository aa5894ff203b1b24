"""How a loaded model runs: its context, slots, threads and caches. Plain data, no native code.

    WorkerConfig --ModelWorker--> ModelParams, ContextParams (native) + SchedulerConfig

The server's settings and LocalLLM's arguments both become one WorkerConfig
(ServerSettings.worker_config, LocalLLM.__init__), so a model runs the same way behind either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botframework.trace import TraceWriter

__all__ = ["WorkerConfig", "auto_slots", "default_threads", "fit_context", "kv_bytes_per_cell", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: what libgomp counts as available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """(decode threads, prompt threads): physical cores for decode, all usable CPUs for prompt."""
    usable = usable_cpus()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover
        physical = usable
    return max(1, min(physical, usable)), max(1, usable)


CELLS_PER_SLOT = 1024  # auto_slots: one slot per this many KV cells
MIN_AUTO_SLOTS, MAX_AUTO_SLOTS = 2, 16
CTX_STEP = 256         # fit_context rounds the context down to a multiple of this
# The longest lone embedding input that ModelWorker.embed (the caller waits anyway) and a
# server with no other request in flight compute on the caller's thread when the engine thread
# is idle: a sentence-sized decode (all-MiniLM-L6-v2, 2 cores: ~2.7 ms for 19 tokens), not one
# that holds the server's event loop for long.
INLINE_EMBED_TOKENS = 64
# The longest prompt of a one-token answer (max_tokens 1: a label, a yes or no, a score) that a
# server with no other request in flight runs on its event loop when the engine thread is idle:
# the answer is one step, a decode of at most this many tokens (SmolLM2-135M, 2 cores: ~5 ms
# for one, ~15 ms for 64), and the hop to the engine thread and back is ~0.2 ms of it.
INLINE_STEP_TOKENS = 64


def auto_slots(n_ctx: int) -> int:
    """Concurrent sequences for a context of n_ctx cells (all slots share them): one per 1,024
    cells, 2 to 16; 8 for the default 8,192. Slots cost no KV memory of their own (the cache
    is unified), so the context, which the memory budget sizes, sizes them too."""
    return max(MIN_AUTO_SLOTS, min(MAX_AUTO_SLOTS, n_ctx // CELLS_PER_SLOT))


def kv_bytes_per_cell(metadata: Mapping[str, str]) -> int:
    """A KV cell's bytes for every layer (f16 K and V), from the GGUF's hyperparameters."""
    arch = metadata.get("general.architecture", "")

    def hparam(key: str, default: int) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:  # an array (per-layer values): take the default
            return default

    n_embd = hparam("embedding_length", 0)
    n_head = max(1, hparam("attention.head_count", 1))
    n_head_kv = hparam("attention.head_count_kv", n_head)
    return hparam("block_count", 0) * 2 * (n_embd // n_head) * n_head_kv * 2


def pick_fitting(sizes: Mapping[str, int], budget_bytes: int) -> str:
    """Of several files of one model (its quantizations), the best that fits: the largest
    whose size plus a quarter (KV cache and buffers) fits the budget, else the smallest."""
    by_size = sorted(sizes, key=lambda name: (sizes[name], name))
    fitting = [name for name in by_size if sizes[name] * 1.25 <= budget_bytes]
    return fitting[-1] if fitting else by_size[0]


def memory_budget_default() -> int:
    """80% of the RAM available now, or of this cgroup's memory limit if that is lower (a
    systemd MemoryMax, a container's limit): the server's default budget, and pull's."""
    import psutil

    available = psutil.virtual_memory().available
    limit = cgroup_memory_available()
    return int(min(available, limit if limit is not None else available) * 0.8)


def cgroup_memory_available(root: Path = Path("/sys/fs/cgroup"),
                            membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """memory.max minus memory.current of this process's cgroup (v2), or None without a limit."""
    try:
        relative = next(line.split("::", 1)[1].strip() for line in membership.read_text().splitlines()
                        if line.startswith("0::"))
        folder = root / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text().strip()))
    except (OSError, ValueError, StopIteration):
        return None


def fit_context(n_ctx: int, weights_bytes: int, cell_bytes: int, budget_bytes: int | None) -> int:
    """The largest context up to n_ctx whose KV cache fits beside the weights in the budget
    (a multiple of 256 cells); ValueError if not even 256 cells fit."""
    if budget_bytes is None or cell_bytes <= 0:
        return n_ctx
    room = (budget_bytes - weights_bytes) // cell_bytes
    if room < CTX_STEP:
        raise ValueError(f"the model's weights ({weights_bytes >> 20} MiB) leave no room for its KV cache in a "
                         f"memory budget of {budget_bytes >> 20} MiB")
    return min(n_ctx, room // CTX_STEP * CTX_STEP)


GpuLayers = int | str  # a number of layers (-1: all), or "auto"


def parse_gpu_layers(value: object) -> GpuLayers:
    """n_gpu_layers from a flag, a config file or an argument: "auto", or an int >= -1."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        layers = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"n_gpu_layers must be 'auto' or a number of layers (-1: all), not {value!r}") from None
    if layers < -1:
        raise ValueError(f"n_gpu_layers must be 'auto' or >= -1, not {layers}")
    return layers


def parse_rpc_servers(value: object) -> tuple[str, ...]:
    """RPC servers from a flag ("host:port,host:port"), a config list or a tuple: host:port each."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    endpoints = tuple(str(item).strip() for item in items if str(item).strip())
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"an RPC server is host:port, not {endpoint!r}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"an RPC server is listed twice: {', '.join(endpoints)}")
    return endpoints


@dataclass(frozen=True)
class WorkerConfig:
    n_ctx: int = 8192                      # at most (the model's training context, the memory budget)
    num_slots: int | None = None           # None: auto_slots(n_ctx)
    memory_budget_bytes: int | None = None  # weights + KV cache; None: n_ctx as asked
    max_batch_tokens: int = 512
    n_threads: int | None = None           # None: default_threads()
    n_threads_batch: int | None = None
    n_gpu_layers: GpuLayers = "auto"        # layers on GPUs / RPC servers; "auto": what fits their free memory
    rpc_servers: tuple[str, ...] = ()      # `botframework rpc-server` host:port: layers spread over them
    max_waiting: int = 256
    session_ram_bytes: int = 512 << 20
    session_disk_bytes: int = 2 << 30
    session_dir: Path | None = None
    prefix_cache_bytes: int = 1 << 30      # idle prompt caches in host RAM (SchedulerConfig)
    flash_attn: str = "auto"
    hugepages: bool = True                 # weights and KV cache in 2 MiB pages (ModelParams)
    repack: bool = True                    # weights in the CPU's own layouts where it has kernels (ModelParams)
    embed_piece_tokens: int = 128          # a causal model's embedding input: tokens per engine-loop turn
    # a model whose tokens attend both ways: inputs packed into one embedding decode up to this
    # many tokens (a longer input still decodes alone, up to the model's context). llama.cpp
    # attends across the whole packed batch and masks what crosses inputs, work that grows with
    # the square of the pack: all-MiniLM-L6-v2, 2 cores, 256 sentences per request: 256 embedded
    # 3% more inputs/s than 512 over HTTP (8 alternating rounds), 5% in a bare decode loop.
    embed_batch_tokens: int = 256
    # an embedding batch of at most this many tokens decodes on one thread (0: always
    # n_threads_batch). On a loaded machine a short sentence's ~1-3 ms of work took 20-40 ms on
    # two threads (a thread descheduled mid-graph stalls every barrier) and 3 ms on one.
    embed_single_thread_tokens: int = 0
    # at most, for event loops to send a request's first or last token (RequestHandle.wait_handled)
    handoff_wait_s: float = 0.003
    # steps run in one native call for plain whole answers, and streams a native sink sends
    # (SchedulerConfig.run_steps); 0: never
    run_steps: int = 16
    # speculative decoding for requests that do not say: "ngram" | "model" | "none" (SchedulerConfig)
    speculative: str = "none"
    draft_max: int = 8
    # draft only what pays by measured step costs and acceptance (SchedulerConfig.draft_by_cost);
    # False: always up to the drafter's own length
    draft_by_cost: bool = True
    # a draft model's GGUF (same vocabulary, loaded by the same worker, its own context on the
    # engine thread): drafts for speculative="model", and for requests that ask when "none"
    draft_model: str | Path | None = None   # a GGUF path (load_model resolves a catalog name first)
    # a botframework.trace.TraceWriter the worker attaches itself to at start (serve --trace)
    trace: TraceWriter | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_gpu_layers", parse_gpu_layers(self.n_gpu_layers))
        object.__setattr__(self, "rpc_servers", parse_rpc_servers(self.rpc_servers))
        if self.speculative not in ("none", "ngram", "model") or self.draft_max < 1:
            raise ValueError(f"speculative must be 'none', 'ngram' or 'model' (not {self.speculative!r}), "
                             "and draft_max >= 1")
        if self.speculative == "model" and self.draft_model is None:
            raise ValueError("speculative 'model' needs a draft_model")
