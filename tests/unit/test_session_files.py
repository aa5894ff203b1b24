"""Sessions on disk (runtime/session_files.py) and the registry's use of them: written on
unload and on save_sessions (the drain), found at start, read back at the model's next load
and removed then; a corrupt file or another model file's session is skipped, never loaded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from botframework.runtime.handle import SavedSession
from botframework.runtime.registry import ModelEntry, Registry
from botframework.runtime.session_files import LLAMA_SEQ_STATE_MAGIC, SessionFileError, SessionFiles, model_identity


def saved(session_id: str = "s1", n: int = 5) -> SavedSession:
    return SavedSession(session_id, list(range(n)), LLAMA_SEQ_STATE_MAGIC + bytes(range(256)) * 3)


def test_a_session_file_round_trips_and_checks_itself(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    identity = model_identity("m", model)
    files = SessionFiles(tmp_path / "sessions")
    ref = files.write(identity, saved())
    assert (ref.session_id, ref.num_tokens) == ("s1", 5) and (tmp_path / "sessions").stat().st_mode & 0o077 == 0
    (found,) = list(files.scan())
    assert found.read(identity) == saved()
    with pytest.raises(SessionFileError, match="another model"):
        found.read(model_identity("other", model))
    model.write_bytes(b"GGUF" + bytes(101))  # the weights changed: the state is not theirs
    with pytest.raises(SessionFileError, match="another model"):
        found.read(model_identity("m", model))
    data = ref.path.read_bytes()
    ref.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SessionFileError, match="checksum"):
        found.read(identity)
    ref.path.write_bytes(data.replace(b"[0,1,2,3,4]", b"[0,1,2,3,5]"))  # the tokens are checked too
    with pytest.raises(SessionFileError, match="checksum"):
        found.read(identity)


@pytest.mark.parametrize("content", [b"", b"nonsense", b"BFSESSION1\n", b"BFSESSION1\n{\"a\": 1}\n",
                                     b"BFSESSION1\n[1, 2]\n", b"BFSESSION1\n{broken\n"])
def test_broken_files_are_skipped_by_scan(tmp_path: Path, content: bytes) -> None:
    files = SessionFiles(tmp_path)
    files.write({"name": "m"}, saved("good"))
    (tmp_path / ("f" * 32 + ".bfsession")).write_bytes(content)
    assert [f.session_id for f in files.scan()] == ["good"]


class Handle:
    def __init__(self, path: Path, sessions: list[SavedSession]) -> None:
        self.path = path
        self.sessions = sessions
        self.imported: list[SavedSession] = []

    def export_sessions(self) -> list[SavedSession]:
        out, self.sessions = self.sessions, []
        return out

    def import_sessions(self, sessions: list[SavedSession]) -> None:
        self.imported.extend(sessions)

    def close(self) -> None:
        pass


def test_the_registry_saves_at_drain_and_restores_at_the_next_load(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(10))
    folder = tmp_path / "sessions"
    handles: list[Handle] = []

    def loader(entry: ModelEntry) -> Handle:
        handles.append(Handle(model, [saved("a"), saved("b", 3)] if not handles else []))
        return handles[-1]

    async def first_run() -> int:
        registry: Registry[Any] = Registry([ModelEntry("m", str(model))], loader, session_files=SessionFiles(folder))
        lease = await registry.acquire("m")
        lease.release()
        count = await registry.save_sessions()
        await registry.close()
        return count

    assert asyncio.run(first_run()) == 2 and len(list(folder.glob("*.bfsession"))) == 2
    SessionFiles(folder).write({"name": "m", "path": "/elsewhere.gguf"}, saved("foreign"))

    async def second_run() -> tuple[str, int] | None:
        registry: Registry[Any] = Registry([ModelEntry("m", str(model))], loader, session_files=SessionFiles(folder))
        parked = registry.parked_session("b")  # known before the model loads: lazily restored
        lease = await registry.acquire("m")
        lease.release()
        await registry.close()
        return parked

    assert asyncio.run(second_run()) == ("m", 3)
    assert sorted(s.session_id for s in handles[-1].imported) == ["a", "b"]  # the foreign one skipped
    assert [p.name for p in folder.glob("*.bfsession")] == [SessionFiles(folder).path_for("foreign").name]


def test_sessions_kept_in_ram_are_dropped_if_the_model_file_changed(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(10))
    handles: list[Handle] = []

    def loader(entry: ModelEntry) -> Handle:
        handles.append(Handle(model, [saved("a")] if not handles else []))
        return handles[-1]

    async def go() -> None:
        registry: Registry[Any] = Registry([ModelEntry("m", str(model))], loader)
        (await registry.acquire("m")).release()
        assert await registry.unload("m")
        model.write_bytes(b"GGUF" + bytes(20))  # other weights at the same path
        (await registry.acquire("m")).release()
        await registry.close()

    asyncio.run(go())
    assert handles[-1].imported == []
