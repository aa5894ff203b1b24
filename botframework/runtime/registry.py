"""Registry: the models one server declares, which of them are loaded, and who is using them.

    declared (ModelEntry: name, aliases, source, WorkerConfig, load, keep_alive_s, sha256)
       │ acquire(name) on the event loop -> Lease (a request in flight; release() when it ends)
       ▼
    UNLOADED --first acquire / preload / POST load--> LOADING --ok--> LOADED --idle keep_alive,
       ▲              (one load however many wait; off the event loop)      LRU eviction,
       │                                      \\--error--> FAILED            POST unload--┐
       └──────────────────────────────────────────────────────────────────────────────────┘
    FAILED: its requests get the load error; the next acquire tries again.

Keep-alive: a model unloads once idle for its entry's keep_alive_s, or for the keep_alive of
the request that used it last (acquire(name, keep_alive_s=...): Ollama's per-request keep_alive;
a request without one restores the entry's).

Memory: before a load, the least recently used idle loaded models are unloaded until the new
model's estimated bytes fit the budget; a model with requests in flight is never unloaded;
if nothing more can go, the request gets BusyError (503 + Retry-After). Each loaded model is
one handle (one engine thread, one scheduler); routes hold it only through a lease, never
across requests, so unload and eviction are safe.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from botframework.config import WorkerConfig, pick_fitting
from botframework.errors import BusyError, ModelLoadError, ModelNotFoundError
from botframework.runtime.handle import SavedSession
from botframework.runtime.session_files import SessionFile, SessionFileError, SessionFiles, model_identity

log = logging.getLogger("botframework.registry")

KEEP_FOREVER = -1.0
LOADING_RETRY_AFTER_S = 5.0


class Closable(Protocol):
    def close(self) -> None: ...


H = TypeVar("H", bound=Closable)


class ModelState(Enum):
    UNLOADED = "unloaded"  # declared; not in memory
    LOADING = "loading"    # a load is running (requests for it wait)
    LOADED = "loaded"      # serving
    UNLOADING = "unloading"  # its sessions are being saved and its memory freed (requests for it wait)
    FAILED = "failed"      # the last load failed; the next request tries again


class LoadPolicy(Enum):
    PRELOAD = "preload"    # loaded when the server starts
    LAZY = "lazy"          # loaded by its first request


@dataclass(frozen=True)
class RemoteSpec:
    """A model another server runs: its OpenAI-compatible base URLs (replicas), the API key it
    wants, its name there, and how long a request may take."""

    urls: tuple[str, ...]
    api_key: str | None = None
    model: str | None = None          # the name the remote knows it by (default: ours)
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a remote model needs at least one url")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"remote url {url!r} must start with http:// or https://")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


@dataclass(frozen=True)
class ModelEntry:
    """One declared model."""

    name: str
    source: str                                   # catalog name, .gguf path or hf: spec
    aliases: tuple[str, ...] = ()
    config: WorkerConfig = field(default_factory=WorkerConfig)
    load: LoadPolicy = LoadPolicy.LAZY
    keep_alive_s: float = KEEP_FOREVER            # idle seconds before unloading; -1 never; 0 after each request
    sha256: str | None = None                     # the file must have this digest
    kind: str | None = None                       # "chat" | "embedding"; None: read from the GGUF
    chat_template: str | None = None
    remote: RemoteSpec | None = None              # served by other servers: requests are forwarded

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model needs a name")
        if self.keep_alive_s < 0 and self.keep_alive_s != KEEP_FOREVER:
            raise ValueError(f"model {self.name!r}: keep_alive must be -1 (never unload) or >= 0 seconds")
        if self.kind not in (None, "chat", "embedding"):
            raise ValueError(f"model {self.name!r}: kind must be 'chat' or 'embedding'")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass
class _Slot(Generic[H]):
    """A declared model's mutable state (event loop only)."""

    entry: ModelEntry
    state: ModelState = ModelState.UNLOADED
    handle: H | None = None
    error: str | None = None
    loading: asyncio.Future[None] | None = None
    unloading: asyncio.Future[None] | None = None
    num_in_flight: int = 0
    last_used: float = 0.0
    loaded_at: float | None = None
    memory_bytes: int = 0
    num_loads: int = 0
    keep_alive_s: float | None = None  # the last request's keep_alive (acquire); None: the entry's
    parked: list[Any] = field(default_factory=list)  # sessions exported at the last unload, for the next load
    parked_from: dict[str, Any] | None = None        # the model file the RAM-parked ones came from


class Lease(Generic[H]):
    """A request's use of a loaded model: the handle, until release() (idempotent)."""

    def __init__(self, registry: Registry[H], slot: _Slot[H], keep_alive_s: float | None = None) -> None:
        assert slot.handle is not None
        self.handle: H = slot.handle
        self.model_name = slot.entry.name
        self._registry = registry
        self._slot: _Slot[H] | None = slot
        self._keep_alive_s = keep_alive_s

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self._registry._released(slot, self._keep_alive_s)


class Registry(Generic[H]):
    """Declared models by name and alias; loads, unloads and leases them. Event loop only,
    except the loader and close, which run in worker threads."""

    def __init__(self, entries: Sequence[ModelEntry], loader: Callable[[ModelEntry], H], *,
                 memory_budget_bytes: int | None = None, estimate_bytes: Callable[[ModelEntry], int] | None = None,
                 measure_bytes: Callable[[H], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, session_files: SessionFiles | None = None) -> None:
        self._slots: dict[str, _Slot[H]] = {}
        self._by_name: dict[str, _Slot[H]] = {}
        for entry in entries:
            slot: _Slot[H] = _Slot(entry)
            for name in entry.names:
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} is declared twice")
                self._by_name[name] = slot
            self._slots[entry.name] = slot
        if not self._slots:
            raise ValueError("no model is declared")
        self._loader = loader
        self.memory_budget_bytes = memory_budget_bytes
        self._estimate = estimate_bytes or (lambda entry: 0)
        self._measure = measure_bytes
        self.clock = clock
        self._room = asyncio.Lock()  # one eviction decision at a time
        self.num_evictions = 0
        self.num_idle_unloads = 0
        # sessions_dir: parked sessions live on disk, and those of an earlier run wait there
        # for their model's next load
        self.session_files = session_files
        if session_files is not None:
            for found in session_files.scan():
                owner = self._by_name.get(str(found.model.get("name")))
                if owner is None:
                    log.warning("session file %s belongs to model %r, which is not declared: left as it is",
                                found.path, found.model.get("name"))
                    continue
                owner.parked.append(found)

    # -- names ------------------------------------------------------------------------------
    @property
    def default_name(self) -> str:
        return next(iter(self._slots))

    def names(self) -> list[str]:
        return list(self._slots)

    @property
    def num_in_flight(self) -> int:
        """Requests holding a model now, over every model."""
        return sum(slot.num_in_flight for slot in self._slots.values())

    def entry(self, name: str | None) -> ModelEntry:
        return self._slot(name).entry

    def _slot(self, name: str | None) -> _Slot[H]:
        if name is None:
            return self._slots[self.default_name]
        slot = self._by_name.get(name)
        if slot is None:
            raise ModelNotFoundError(f"The model '{name}' does not exist; this server serves: "
                                     f"{', '.join(sorted(self._slots))}")
        return slot

    def find(self, match: Callable[[ModelEntry], bool]) -> ModelEntry | None:
        """The first declared model `match` accepts."""
        return next((slot.entry for slot in self._slots.values() if match(slot.entry)), None)

    def declare(self, entry: ModelEntry, *, same: Callable[[ModelEntry], bool] | None = None) -> ModelEntry:
        """Add a model after start (POST /v1/models/{spec}/load with a path or a cached catalog
        name). A declared model that `same(entry)` says is this one is returned instead; a name
        taken by another model is a ValueError."""
        for known in self._slots.values():
            if same is not None and same(known.entry):
                return known.entry
        taken = [name for name in entry.names if name in self._by_name]
        if taken:
            raise ValueError(f"the name {taken[0]!r} is already taken by another model")
        slot: _Slot[H] = _Slot(entry)
        self._slots[entry.name] = slot
        for name in entry.names:
            self._by_name[name] = slot
        return entry

    # -- use --------------------------------------------------------------------------------
    async def acquire(self, name: str | None = None, *, keep_alive_s: float | None = None) -> Lease[H]:
        """The model's handle for one request, loading it first if it is not loaded (the other
        models keep serving meanwhile). ModelNotFoundError, ModelLoadError, BusyError.
        `keep_alive_s`: how long the model stays loaded once idle after this request (-1: until
        unloaded, 0: unload when it ends); None: the entry's keep_alive."""
        if keep_alive_s is not None and keep_alive_s < 0 and keep_alive_s != KEEP_FOREVER:
            raise ValueError("keep_alive must be -1 (never unload) or >= 0 seconds")
        slot = self._slot(name)
        while True:
            if slot.state is ModelState.LOADED:
                slot.num_in_flight += 1
                slot.last_used = self.clock()
                return Lease(self, slot, keep_alive_s)
            if slot.unloading is not None:  # its sessions and memory are not free yet
                await asyncio.shield(slot.unloading)
                continue
            await self._ensure_loading(slot)

    def peek(self, name: str | None = None) -> H | None:
        """The handle if the model is loaded now (no lease: for introspection only)."""
        slot = self._slot(name)
        return slot.handle if slot.state is ModelState.LOADED else None

    def keep_alive_s(self, name: str | None = None) -> float:
        """The idle seconds before the model unloads: the last request's keep_alive, else its entry's."""
        return _keep_alive(self._slot(name))

    def _released(self, slot: _Slot[H], keep_alive_s: float | None = None) -> None:
        slot.num_in_flight -= 1
        slot.last_used = self.clock()
        slot.keep_alive_s = keep_alive_s
        if slot.num_in_flight == 0 and _keep_alive(slot) == 0 and slot.state is ModelState.LOADED:
            asyncio.get_running_loop().create_task(self._unload_if_idle(slot))

    async def load(self, name: str) -> None:
        """Load now (POST /v1/models/{id}/load); a loaded model stays as it is."""
        slot = self._slot(name)
        if slot.state is not ModelState.LOADED:
            await self._ensure_loading(slot)

    async def unload(self, name: str) -> bool:
        """Unload now; False if it was not loaded. BusyError if requests are in flight."""
        slot = self._slot(name)
        if slot.loading is not None:
            await asyncio.shield(slot.loading)
        if slot.unloading is not None:
            await asyncio.shield(slot.unloading)
        if slot.state is not ModelState.LOADED:
            return False
        if slot.num_in_flight:
            raise BusyError(f"model '{slot.entry.name}' has {slot.num_in_flight} requests in flight",
                            retry_after_s=1.0)
        await self._unload(slot)
        return True

    async def preload(self) -> None:
        """Load every model declared with load = "preload"; a failure is logged and kept as
        the model's state (FAILED), never raised: the others still load."""
        for slot in self._slots.values():
            if slot.entry.load is LoadPolicy.PRELOAD:
                try:
                    await self._ensure_loading(slot)
                except Exception as exc:  # noqa: BLE001 - recorded in the slot, shown by /v1/models
                    log.error("could not load model %r: %s", slot.entry.name, exc)

    async def sweep(self) -> None:
        """Unload models idle for longer than their keep_alive (call every second or so)."""
        now = self.clock()
        for slot in self._slots.values():
            keep = _keep_alive(slot)
            # (keep_alive 0 unloads when a request ends, not here: a model loaded for requests
            # still waiting to resume must not go before they run)
            if (slot.state is ModelState.LOADED and not slot.num_in_flight and keep > 0
                    and now - slot.last_used >= keep):
                self.num_idle_unloads += 1
                await self._unload(slot)

    async def close(self) -> None:
        for slot in self._slots.values():
            if slot.loading is not None:
                await asyncio.gather(slot.loading, return_exceptions=True)
            if slot.unloading is not None:
                await asyncio.gather(slot.unloading, return_exceptions=True)
            if slot.state is ModelState.LOADED:
                await self._unload(slot, keep_sessions=False)  # (the process ends: nothing to hand them to)

    # -- loading ----------------------------------------------------------------------------
    def _ensure_loading(self, slot: _Slot[H]) -> Awaitable[None]:
        """One load however many callers wait for it; each waiter gets its error."""
        if slot.loading is None:
            slot.loading = asyncio.ensure_future(self._load(slot))
        return asyncio.shield(slot.loading)

    async def _load(self, slot: _Slot[H]) -> None:
        entry = slot.entry
        try:
            if slot.unloading is not None:  # the previous copy first saves its sessions and goes
                await asyncio.shield(slot.unloading)
            need = self._estimate(entry)
            async with self._room:
                await self._make_room(need, exclude=slot)
                slot.state = ModelState.LOADING
                slot.error = None
                slot.memory_bytes = need  # counted against the budget while it loads
            t0 = time.perf_counter()
            try:
                handle = await asyncio.to_thread(self._loader, entry)
            except BaseException as exc:
                slot.state, slot.memory_bytes = ModelState.FAILED, 0
                slot.error = f"{type(exc).__name__}: {exc}"
                log.error("model %r failed to load: %s", entry.name, exc)
                if not isinstance(exc, Exception):  # cancelled: the server is stopping
                    raise
                raise ModelLoadError(f"model '{entry.name}' could not be loaded: {exc}") from exc
            try:
                if slot.parked and hasattr(handle, "import_sessions"):
                    parked, slot.parked = slot.parked, []
                    parked_from, slot.parked_from = slot.parked_from, None
                    try:
                        await asyncio.to_thread(self._restore, entry, handle, parked, parked_from)
                    except Exception:  # noqa: BLE001 - lost sessions start over; the model still serves
                        log.exception("model %r: could not restore %d sessions", entry.name, len(parked))
                measured = self._measure(handle) if self._measure is not None else need
            except BaseException:  # never leave a loaded handle nobody owns
                slot.state, slot.memory_bytes, slot.error = ModelState.FAILED, 0, "interrupted while loading"
                await asyncio.to_thread(handle.close)
                raise
            slot.handle = handle
            slot.memory_bytes = measured
            slot.state = ModelState.LOADED
            slot.loaded_at = slot.last_used = self.clock()
            slot.num_loads += 1
            log.info("model %r loaded in %.1f s (%.0f MiB)", entry.name, time.perf_counter() - t0,
                     slot.memory_bytes / (1 << 20))
        finally:
            slot.loading = None

    async def _make_room(self, need: int, exclude: _Slot[H]) -> None:
        budget = self.memory_budget_bytes
        if budget is None:
            return
        if need > budget:
            raise ModelLoadError(f"model '{exclude.entry.name}' needs about {need >> 20} MiB; the memory budget "
                                 f"is {budget >> 20} MiB")
        while self._used_bytes() + need > budget:
            idle = [s for s in self._slots.values()
                    if s is not exclude and s.state is ModelState.LOADED and not s.num_in_flight]
            if not idle:
                busy = [s.entry.name for s in self._slots.values() if s.memory_bytes and s is not exclude]
                raise BusyError(f"not enough memory to load '{exclude.entry.name}' ({need >> 20} MiB) while "
                                f"{', '.join(busy)} serve requests; try again shortly",
                                retry_after_s=LOADING_RETRY_AFTER_S)
            victim = min(idle, key=lambda s: s.last_used)
            log.info("unloading %r (least recently used) to make room for %r", victim.entry.name, exclude.entry.name)
            self.num_evictions += 1
            await self._unload(victim)

    def _used_bytes(self) -> int:
        return sum(s.memory_bytes for s in self._slots.values()
                   if s.state in (ModelState.LOADED, ModelState.LOADING, ModelState.UNLOADING))

    async def _unload_if_idle(self, slot: _Slot[H]) -> None:
        await asyncio.sleep(0)  # a request that acquired it in the meantime keeps it
        if slot.state is ModelState.LOADED and not slot.num_in_flight:
            self.num_idle_unloads += 1
            await self._unload(slot)

    async def _unload(self, slot: _Slot[H], *, keep_sessions: bool = True) -> None:
        """Save the model's sessions for its next load, then free it. Requests for it wait
        meanwhile (UNLOADING), and its memory counts until it is freed."""
        handle, slot.handle = slot.handle, None
        slot.state, slot.loaded_at = ModelState.UNLOADING, None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.unloading = done
        try:
            if handle is not None:
                if keep_sessions:  # sessions outlive the unload
                    await self._park(slot, handle)
                await asyncio.to_thread(handle.close)
                log.info("model %r unloaded (%d sessions kept)", slot.entry.name, len(slot.parked))
        finally:
            slot.state, slot.memory_bytes, slot.unloading = ModelState.UNLOADED, 0, None
            done.set_result(None)

    # -- sessions across unloads and restarts -------------------------------------------------
    async def _park(self, slot: _Slot[H], handle: H) -> None:
        """Take the model's sessions out of it: kept in RAM, or written to sessions_dir."""
        export = getattr(handle, "export_sessions", None)
        if export is None:
            return
        try:
            sessions = await asyncio.to_thread(export)
            if self.session_files is not None:
                sessions = await asyncio.to_thread(self._write, slot.entry, handle, sessions)
            elif sessions:
                slot.parked_from = await asyncio.to_thread(model_identity, slot.entry.name,
                                                           getattr(handle, "path", None))
            slot.parked.extend(sessions)
        except Exception:  # noqa: BLE001 - never keep a model loaded because of its sessions
            log.exception("model %r: could not save its sessions", slot.entry.name)

    def _write(self, entry: ModelEntry, handle: H | None, sessions: Sequence[Any]) -> list[Any]:
        assert self.session_files is not None
        identity = model_identity(entry.name, getattr(handle, "path", None))
        return [self.session_files.write(identity, saved) if isinstance(saved, SavedSession) else saved
                for saved in sessions]

    def _restore(self, entry: ModelEntry, handle: H, parked: Sequence[Any],
                 parked_from: dict[str, Any] | None = None) -> None:
        """Parked sessions back into a freshly loaded model; a file's that is corrupt or of
        another model file is skipped with a warning (and left on disk), and so are sessions
        kept in RAM if the model's file changed while it was unloaded."""
        identity = model_identity(entry.name, getattr(handle, "path", None))
        in_ram_ok = parked_from is None or parked_from == identity
        if not in_ram_ok:
            log.warning("model %r: its file changed while it was unloaded: %d sessions start over", entry.name,
                        sum(not isinstance(item, SessionFile) for item in parked))
        sessions: list[SavedSession] = []
        files: list[SessionFile] = []
        for item in parked:
            if isinstance(item, SessionFile):
                try:
                    sessions.append(item.read(identity))
                    files.append(item)
                except SessionFileError as exc:
                    log.warning("model %r: skipping session file %s: %s", entry.name, item.path, exc)
            elif in_ram_ok:
                sessions.append(item)
        handle.import_sessions(sessions)  # type: ignore[attr-defined]
        for item in files:  # back in the model: the next drain or unload writes them again
            item.path.unlink(missing_ok=True)

    async def save_sessions(self) -> int:
        """Every session of every model to sessions_dir (the drain's last step, with no request
        in flight); the number written. Without sessions_dir, nothing (0)."""
        if self.session_files is None:
            return 0
        count = 0
        for slot in self._slots.values():
            if slot.state is ModelState.LOADED and slot.handle is not None:
                await self._park(slot, slot.handle)
            slot.parked = await asyncio.to_thread(self._write, slot.entry, slot.handle, slot.parked)
            count += len(slot.parked)
        return count

    # -- introspection ----------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """Every declared model: state, memory, idle time, requests in flight, last error."""
        now = self.clock()
        out = []
        for slot in self._slots.values():
            out.append({
                "id": slot.entry.name, "aliases": list(slot.entry.aliases), "source": slot.entry.source,
                "state": slot.state.value, "memory_bytes": slot.memory_bytes,
                "idle_s": round(now - slot.last_used, 3) if slot.state is ModelState.LOADED and
                not slot.num_in_flight else 0.0,
                "num_in_flight": slot.num_in_flight, "keep_alive_s": _keep_alive(slot),
                "load": slot.entry.load.value, "num_loads": slot.num_loads, "error": slot.error,
                "placement": _placement(slot.handle) if slot.state is ModelState.LOADED else None,
            })
        return out

    def parked_session(self, session_id: str, name: str | None = None) -> tuple[str, int] | None:
        """(model, tokens) of a session kept while its model is unloaded; None if none is."""
        for slot in self._named_or_all(name):
            for saved in slot.parked:
                if getattr(saved, "session_id", None) == session_id:
                    return slot.entry.name, len(getattr(saved, "tokens", ()))
        return None

    def drop_parked_session(self, session_id: str, name: str | None = None) -> bool:
        found = False
        for slot in self._named_or_all(name):
            kept = [saved for saved in slot.parked if getattr(saved, "session_id", None) != session_id]
            found = found or len(kept) != len(slot.parked)
            for dropped in slot.parked:
                if isinstance(dropped, SessionFile) and dropped.session_id == session_id:
                    dropped.path.unlink(missing_ok=True)
            slot.parked = kept
        return found

    def _named_or_all(self, name: str | None) -> list[_Slot[H]]:
        return [self._slot(name)] if name is not None else list(self._slots.values())

    def loaded(self) -> list[tuple[str, H]]:
        return [(s.entry.name, s.handle) for s in self._slots.values()
                if s.state is ModelState.LOADED and s.handle is not None]


def _keep_alive(slot: _Slot[Any]) -> float:
    return slot.entry.keep_alive_s if slot.keep_alive_s is None else slot.keep_alive_s


def gguf_files(folder: Path) -> list[Path]:
    """Every .gguf file directly in `folder`, sorted (what --models-dir serves)."""
    return sorted(p for p in folder.glob("*.gguf") if p.is_file())


# a quantization tag at the end of a file's stem: qwen2.5-1.5b-instruct-q4_k_m, model.Q8_0, x-f16
_QUANT_TAG = re.compile(r"[-_.](?:i?q\d[a-z0-9_]*|f16|bf16|f32)$", re.IGNORECASE)


def best_quantizations(paths: Sequence[Path], budget_bytes: int) -> dict[str, Path]:
    """For each model that a folder holds in several quantizations (the same stem but for its
    quantization tag), the best one that fits: the largest file whose size plus a quarter (KV
    cache and buffers) fits the budget, else the smallest. {base name: file}."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        base = _QUANT_TAG.sub("", path.stem)
        if base != path.stem:
            groups.setdefault(base, []).append(path)
    best: dict[str, Path] = {}
    for base, files in groups.items():
        if len(files) >= 2:
            chosen = pick_fitting({str(p): p.stat().st_size for p in files}, budget_bytes)
            best[base] = Path(chosen)
    return best


async def sweep_forever(registry: Registry[Any], period_s: float = 1.0) -> None:
    """The keep-alive loop the server runs beside its routes."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await registry.sweep()
        except Exception:  # noqa: BLE001 - a failed unload must not stop the loop
            log.exception("keep-alive sweep failed")


def _placement(handle: Any) -> dict[str, Any] | None:
    """Where a loaded model's layers are: n_gpu_layers and the devices (GPUs, RPC servers)."""
    model = getattr(getattr(handle, "worker", None), "model", None)
    placement = getattr(model, "placement", None)
    if not isinstance(placement, dict):
        return None
    return {"n_gpu_layers": placement.get("n_gpu_layers", 0),
            "devices": [f"{d['name']} ({d['description']})" for d in placement.get("devices", [])]}

