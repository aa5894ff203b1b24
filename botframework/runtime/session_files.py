"""Chat sessions on disk, so that they outlive the process (sessions_dir).

    drain, or a model unloaded  -> SessionFiles.write(identity, SavedSession)   one file each
    start                       -> SessionFiles.scan() -> SessionFile refs (header only), parked
                                   with their model; a corrupt or foreign file is skipped, with a
                                   warning, and never loaded
    the model's next load       -> SessionFile.read(identity) -> SavedSession -> import_sessions;
                                   the file is removed once its session is back in the model

A file: MAGIC, one line of JSON (session id, the model's identity, the tokens, the state's size
and sha256), then llama.cpp's state bytes. The identity is the model's name and its file's path,
size and modification time: a session's KV state is only valid for the weights it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botframework.runtime.handle import SavedSession

log = logging.getLogger("botframework.sessions")

MAGIC = b"BFSESSION1\n"
SUFFIX = ".bfsession"
MAX_HEADER_BYTES = 64 << 20  # tokens of a long session as JSON: generous, still bounded


def model_identity(name: str, path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """What a session's state belongs to: the model's name and its file as it is now."""
    if path is None:
        return {"name": name}
    stat = Path(path).stat()
    return {"name": name, "path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class SessionFileError(Exception):
    """A session file that cannot be used: unreadable, corrupt, or another model's."""


@dataclass(frozen=True)
class SessionFile:
    """A session on disk, known by its header (its state is read only when its model loads)."""

    path: Path
    session_id: str
    model: Mapping[str, Any]
    num_tokens: int

    @property
    def tokens(self) -> list[int]:  # what parked-session lookups read (their length)
        return [0] * self.num_tokens

    def read(self, identity: Mapping[str, Any]) -> SavedSession:
        """The session, checked: the same model, and the state's checksum."""
        header, data = _read(self.path, with_data=True)
        if dict(header["model"]) != dict(identity):
            raise SessionFileError(f"{self.path.name} belongs to another model file ({header['model']})")
        return SavedSession(header["session_id"], [int(t) for t in header["tokens"]], data)


class SessionFiles:
    """One folder of session files (created on first write, mode 0700: prompts are private)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path_for(self, session_id: str) -> Path:
        return self.folder / (hashlib.sha256(session_id.encode()).hexdigest()[:32] + SUFFIX)

    def write(self, identity: Mapping[str, Any], session: SavedSession) -> SessionFile:
        """Write (or replace) one session's file atomically."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        model = dict(identity)
        header = {"session_id": session.session_id, "model": model, "tokens": list(session.tokens),
                  "data_bytes": len(session.data), "data_sha256": hashlib.sha256(session.data).hexdigest()}
        target = self.path_for(session.session_id)
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(MAGIC)
            out.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            out.write(session.data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        return SessionFile(target, session.session_id, model, len(session.tokens))

    def scan(self) -> Iterator[SessionFile]:
        """Every readable session file's header; the others are skipped with a warning."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*" + SUFFIX)):
            try:
                header, _ = _read(path, with_data=False)
                yield SessionFile(path, str(header["session_id"]), header["model"], len(header["tokens"]))
            except SessionFileError as exc:
                log.warning("skipping session file %s: %s", path, exc)

    def remove(self, session_id: str) -> bool:
        try:
            self.path_for(session_id).unlink()
            return True
        except FileNotFoundError:
            return False


def _read(path: Path, *, with_data: bool) -> tuple[dict[str, Any], bytes]:
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise SessionFileError("not a botframework session file")
            line = f.readline(MAX_HEADER_BYTES + 1)
            if not line.endswith(b"\n"):
                raise SessionFileError("truncated or oversized header")
            header = json.loads(line)
            if not isinstance(header, dict) or not {"session_id", "model", "tokens", "data_bytes",
                                                    "data_sha256"} <= set(header):
                raise SessionFileError("header lacks fields")
            if not with_data:
                return header, b""
            data = f.read(int(header["data_bytes"]) + 1)
    except (OSError, ValueError) as exc:  # unreadable, bad JSON
        raise SessionFileError(str(exc)) from exc
    if len(data) != header["data_bytes"] or hashlib.sha256(data).hexdigest() != header["data_sha256"]:
        raise SessionFileError("the state does not match its checksum")
    return header, data
