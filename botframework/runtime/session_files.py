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
        if header["model"] != dict(identity):
            raise SessionFileError(f"{self.path.name} belongs to another model file ({header['model']})")
        return SavedSession(header["session_id"], list(header["tokens"]), data)


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
        tokens = [int(t) for t in session.tokens]
        header = {"session_id": session.session_id, "model": model, "tokens": tokens, "data_bytes": len(session.data),
                  "sha256": _digest(session.session_id, model, tokens, session.data)}
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


# what llama_state_seq_get_data writes first (llama-context.cpp's io_magic): state that does not
# start with it is not a sequence's state, and llama.cpp would refuse it in the middle of a step
LLAMA_SEQ_STATE_MAGIC = (0xAF143CD8).to_bytes(4, "little")
MAX_DATA_BYTES = 1 << 40


def _digest(session_id: str, model: Mapping[str, Any], tokens: list[int], data: bytes) -> str:
    """The checksum: the header's meaning (id, model, tokens) and the state together."""
    digest = hashlib.sha256(json.dumps([session_id, model, tokens], sort_keys=True, separators=(",", ":")).encode())
    digest.update(data)
    return digest.hexdigest()


def _check_header(header: Any) -> dict[str, Any]:
    """The header's fields with the right types and ranges, or SessionFileError."""
    if not isinstance(header, dict):
        raise SessionFileError("the header is not an object")
    session_id, model, tokens = header.get("session_id"), header.get("model"), header.get("tokens")
    size, digest = header.get("data_bytes"), header.get("sha256")
    if not isinstance(session_id, str) or not session_id:
        raise SessionFileError("bad session_id")
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) and
                                              not isinstance(v, bool) for k, v in model.items()):
        raise SessionFileError("bad model identity")
    if not isinstance(tokens, list) or not all(type(t) is int and 0 <= t < 1 << 31 for t in tokens):
        raise SessionFileError("bad tokens")
    if type(size) is not int or not 0 < size <= MAX_DATA_BYTES:
        raise SessionFileError("bad data_bytes")
    if not isinstance(digest, str) or len(digest) != 64:
        raise SessionFileError("bad checksum field")
    return header


def _read(path: Path, *, with_data: bool) -> tuple[dict[str, Any], bytes]:
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise SessionFileError("not a botframework session file")
            line = f.readline(MAX_HEADER_BYTES + 1)
            if not line.endswith(b"\n"):
                raise SessionFileError("truncated or oversized header")
            header = _check_header(json.loads(line))
            if not with_data:
                return header, b""
            remaining = os.fstat(f.fileno()).st_size - f.tell()
            if remaining != header["data_bytes"]:
                raise SessionFileError("the state's size does not match the file")
            data = f.read(remaining)
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, bad JSON, JSON nested too deep
        raise SessionFileError(f"{type(exc).__name__}: {exc}") from exc
    if _digest(header["session_id"], header["model"], header["tokens"], data) != header["sha256"]:
        raise SessionFileError("the file does not match its checksum")
    if not data.startswith(LLAMA_SEQ_STATE_MAGIC):
        raise SessionFileError("the state is not a llama.cpp sequence state")
    return header, data
