"""Registry on fake models: single-flight loads, failures kept per model, LRU eviction under a
memory budget, keep-alive, leases (the real-model tests are in tests/e2e/test_multi_model.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from botframework.errors import BusyError, ModelLoadError, ModelNotFoundError
from botframework.runtime.registry import LoadPolicy, ModelEntry, ModelState, Registry


class FakeHandle:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Loader:
    """Counts loads; a load takes `delay_s` in its worker thread; names in `broken` fail."""

    def __init__(self, delay_s: float = 0.0, broken: set[str] | None = None) -> None:
        self.delay_s = delay_s
        self.broken = broken or set()
        self.loads: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, entry: ModelEntry) -> FakeHandle:
        with self.lock:
            self.loads.append(entry.name)
        time.sleep(self.delay_s)
        if entry.name in self.broken:
            raise ModelLoadError(f"{entry.source} is not a GGUF file")
        return FakeHandle(entry.name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entries(*names: str, **kw: object) -> list[ModelEntry]:
    return [ModelEntry(name=n, source=f"/models/{n}.gguf", **kw) for n in names]  # type: ignore[arg-type]


def test_eight_concurrent_first_requests_cause_one_load() -> None:
    async def go() -> None:
        loader = Loader(delay_s=0.2)
        reg = Registry(entries("chat", "code"), loader)
        leases = await asyncio.gather(*(reg.acquire("chat") for _ in range(8)))
        assert loader.loads == ["chat"]
        assert {id(lease.handle) for lease in leases} == {id(leases[0].handle)}
        assert reg.describe()[0]["num_in_flight"] == 8
        for lease in leases:
            lease.release()
            lease.release()  # idempotent
        assert reg.describe()[0]["num_in_flight"] == 0
        await reg.close()
        assert leases[0].handle.closed

    asyncio.run(go())


def test_other_models_serve_while_one_loads() -> None:
    async def go() -> None:
        loader = Loader(delay_s=0.0)
        reg = Registry(entries("fast", "slow"), loader)
        (await reg.acquire("fast")).release()
        loader.delay_s = 0.5
        slow = asyncio.ensure_future(reg.acquire("slow"))
        await asyncio.sleep(0.05)
        assert reg.describe()[1]["state"] == "loading"
        t0 = time.perf_counter()
        (await reg.acquire("fast")).release()
        assert time.perf_counter() - t0 < 0.25  # not behind the other model's load
        (await slow).release()

    asyncio.run(go())


def test_a_failed_load_is_that_models_error_and_the_next_request_retries() -> None:
    async def go() -> None:
        loader = Loader(broken={"bad"})
        reg = Registry(entries("good", "bad"), loader)
        results = await asyncio.gather(*(reg.acquire("bad") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, ModelLoadError) for r in results) and loader.loads == ["bad"]
        state = {m["id"]: m for m in reg.describe()}
        assert state["bad"]["state"] == "failed" and "not a GGUF" in state["bad"]["error"]
        (await reg.acquire("good")).release()  # the others serve
        loader.broken.clear()
        (await reg.acquire("bad")).release()  # retried, now fine
        assert loader.loads == ["bad", "good", "bad"] and reg.describe()[1]["state"] == "loaded"

    asyncio.run(go())


def test_unknown_names_list_the_served_ones_and_aliases_resolve() -> None:
    async def go() -> None:
        reg = Registry([ModelEntry(name="chat", source="x", aliases=("gpt-4o",)), *entries("embed")], Loader())
        with pytest.raises(ModelNotFoundError, match="chat, embed"):
            await reg.acquire("nope")
        lease = await reg.acquire("gpt-4o")
        assert lease.model_name == "chat"
        lease.release()
        with pytest.raises(ValueError, match="declared twice"):
            Registry([*entries("a"), ModelEntry(name="b", source="y", aliases=("a",))], Loader())

    asyncio.run(go())


def test_lru_idle_model_is_evicted_to_fit_the_budget_and_busy_ones_never() -> None:
    async def go() -> None:
        clock = Clock()
        loader = Loader()
        reg = Registry(entries("a", "b", "c"), loader, memory_budget_bytes=250, estimate_bytes=lambda e: 100,
                       clock=clock)
        (await reg.acquire("a")).release()
        clock.now += 1
        (await reg.acquire("b")).release()
        clock.now += 1
        lease_c = await reg.acquire("c")  # 300 > 250: a (least recently used) goes
        state = {m["id"]: m["state"] for m in reg.describe()}
        assert state == {"a": "unloaded", "b": "loaded", "c": "loaded"} and reg.num_evictions == 1
        lease_b = await reg.acquire("b")
        with pytest.raises(BusyError) as busy:  # b and c are in use: nothing can go
            await reg.acquire("a")
        assert busy.value.retry_after_s > 0
        assert {m["id"]: m["state"] for m in reg.describe()}["a"] == "unloaded"
        lease_b.release()
        (await reg.acquire("a")).release()  # now b is idle: it goes
        assert {m["id"]: m["state"] for m in reg.describe()} == {"a": "loaded", "b": "unloaded", "c": "loaded"}
        lease_c.release()
        with pytest.raises(ModelLoadError, match="memory budget"):
            await Registry(entries("huge"), loader, memory_budget_bytes=50, estimate_bytes=lambda e: 100).acquire()

    asyncio.run(go())


def test_idle_models_unload_after_keep_alive_and_zero_means_after_each_request() -> None:
    async def go() -> None:
        clock = Clock()
        reg = Registry([ModelEntry(name="a", source="x", keep_alive_s=30),
                        ModelEntry(name="b", source="y"),  # -1: never
                        ModelEntry(name="c", source="z", keep_alive_s=0)], Loader(), clock=clock)
        for name in "abc":
            (await reg.acquire(name)).release()
        await asyncio.sleep(0.05)  # c's unload runs as a task
        assert [m["state"] for m in reg.describe()] == ["loaded", "loaded", "unloaded"]
        lease = await reg.acquire("a")
        clock.now += 60
        await reg.sweep()
        assert reg.describe()[0]["state"] == "loaded"  # in flight: kept
        lease.release()
        clock.now += 29
        await reg.sweep()
        assert reg.describe()[0]["state"] == "loaded"
        clock.now += 2
        await reg.sweep()
        assert [m["state"] for m in reg.describe()] == ["unloaded", "loaded", "unloaded"]

    asyncio.run(go())


def test_preload_loads_what_asks_for_it_and_survives_a_failure() -> None:
    async def go() -> None:
        loader = Loader(broken={"bad"})
        reg = Registry([ModelEntry(name="bad", source="x", load=LoadPolicy.PRELOAD),
                        ModelEntry(name="good", source="y", load=LoadPolicy.PRELOAD),
                        ModelEntry(name="lazy", source="z")], loader)
        await reg.preload()
        assert [m["state"] for m in reg.describe()] == ["failed", "loaded", "unloaded"]
        assert await reg.unload("good") and not await reg.unload("lazy")
        lease = await reg.acquire("lazy")
        with pytest.raises(BusyError):
            await reg.unload("lazy")
        lease.release()
        assert reg.describe()[2]["state"] == ModelState.LOADED.value

    asyncio.run(go())


class SessionHandle(FakeHandle):
    """A handle whose chat sessions can be taken out and put back."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sessions: list[str] = []

    def export_sessions(self) -> list[str]:
        out, self.sessions = self.sessions, []
        return out

    def import_sessions(self, sessions: list[str]) -> None:
        self.sessions.extend(sessions)


def test_sessions_outlive_the_unloading_of_their_model() -> None:
    async def go() -> None:
        reg = Registry(entries("chat"), SessionHandle)
        lease = await reg.acquire("chat")
        lease.handle.sessions.append("sess-1")
        lease.release()
        first = lease.handle
        assert await reg.unload("chat") and first.closed and first.sessions == []
        lease = await reg.acquire("chat")
        assert lease.handle is not first and lease.handle.sessions == ["sess-1"]
        lease.release()

    asyncio.run(go())


class SlowHandle(SessionHandle):
    """Saving sessions and closing take a while, as they do with a real model."""

    live: set[SlowHandle] = set()
    most_alive = 0

    def __init__(self, name: str) -> None:
        super().__init__(name)
        SlowHandle.live.add(self)
        SlowHandle.most_alive = max(SlowHandle.most_alive, len(SlowHandle.live))

    def export_sessions(self) -> list[str]:
        time.sleep(0.2)
        return super().export_sessions()

    def close(self) -> None:
        time.sleep(0.2)
        SlowHandle.live.discard(self)
        super().close()


def test_a_request_during_an_unload_waits_for_it_and_gets_the_sessions() -> None:
    async def go() -> None:
        reg = Registry([ModelEntry(name="m", source="x", keep_alive_s=0)], SlowHandle,
                       memory_budget_bytes=150, estimate_bytes=lambda e: 100)
        lease = await reg.acquire("m")
        lease.handle.sessions.append("sess-1")
        lease.release()  # keep_alive 0: the unload starts
        await asyncio.sleep(0.05)
        assert reg.describe()[0]["state"] == "unloading"
        again = await reg.acquire("m")  # waits: never two copies in memory, sessions not lost
        assert SlowHandle.most_alive == 1 and again.handle.sessions == ["sess-1"]
        again.release()
        await reg.close()

    asyncio.run(go())


def test_the_default_budget_heeds_a_cgroup_memory_limit(tmp_path: Path) -> None:
    from botframework.config import cgroup_memory_available

    membership = tmp_path / "cgroup"
    membership.write_text("0::/system.slice/bot.framework.service\n")
    folder = tmp_path / "system.slice" / "bot.framework.service"
    folder.mkdir(parents=True)
    (folder / "memory.max").write_text("4294967296\n")
    (folder / "memory.current").write_text("1073741824\n")
    assert cgroup_memory_available(tmp_path, membership) == 3 << 30
    (folder / "memory.max").write_text("max\n")
    assert cgroup_memory_available(tmp_path, membership) is None
    assert cgroup_memory_available(tmp_path / "nowhere", membership) is None
