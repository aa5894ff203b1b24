"""Hostile saved-session files (runtime/session_files.py), beyond tests/unit/test_session_files.py:
headers whose fields have the wrong types or absurd sizes, 100k-deep JSON, every truncation of a
valid file, bit flips, another model's file, and, against the real server, a garbage state with
a valid checksum and a file that breaks the server's start.

SessionFiles.scan() must skip what it cannot use (never raise: the registry calls it while the
server starts) and SessionFile.read() must refuse with SessionFileError (the only error the
registry catches while it loads the model).

The first version of this file found 13 ways through (wrong-typed fields raising TypeError /
ValueError / MemoryError / OverflowError / RecursionError, one of them stopping the server's
start; a header outside the checksum; noise for a state answering 500): fixed in 0d70209, they
are regression cases now.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import httpx
import pytest
from server_proc import served

from botframework.runtime import session_files
from botframework.runtime.handle import SavedSession
from botframework.runtime.session_files import MAGIC, SessionFileError, SessionFiles, model_identity

MODEL = "smollm2-135m-instruct"
IDENTITY = {"name": "m"}


STATE_MAGIC = session_files.LLAMA_SEQ_STATE_MAGIC
STATE = STATE_MAGIC + b"state-bytes"


def file_bytes(data: bytes = STATE, **fields: object) -> bytes:
    """A file in the current format (the checksum covers id, model, tokens and state), with `fields` overridden."""
    header: dict[str, object] = {"session_id": "s", "model": IDENTITY, "tokens": [1, 2, 3], "data_bytes": len(data)}
    header["sha256"] = session_files._digest("s", IDENTITY, [1, 2, 3], data)
    header.update(fields)
    return MAGIC + json.dumps(header).encode() + b"\n" + data


def outcome(folder: Path, content: bytes) -> str:
    """'skipped' by scan, 'refused' by read, 'read' (accepted), or 'raised <type>' (a bug)."""
    path = folder / ("a" * 32 + ".bfsession")
    path.write_bytes(content)
    try:
        try:
            found = list(SessionFiles(folder).scan())
        except Exception as exc:  # noqa: BLE001 - what escapes is the finding
            return f"scan raised {type(exc).__name__}"
        if not found:
            return "skipped"
        try:
            found[0].read(IDENTITY)
        except SessionFileError:
            return "refused"
        except Exception as exc:  # noqa: BLE001
            return f"read raised {type(exc).__name__}"
        return "read"
    finally:
        path.unlink()


REFUSED = {
    "empty": b"",
    "magic only": MAGIC,
    "other magic": b"BFSESSION2\n" + file_bytes()[len(MAGIC):],
    "a GGUF": b"GGUF" + bytes(64),
    "no newline": MAGIC + b'{"session_id": "s"',
    "invalid utf-8 header": MAGIC + b'{"session_id":"\xff"}\n',
    "header a list": MAGIC + b"[1, 2]\n",
    "data_bytes -1": file_bytes(data_bytes=-1),
    "data_bytes -10": file_bytes(data_bytes=-10),
    "data_bytes a float": file_bytes(data_bytes=5.5),
    "data_bytes a string": file_bytes(data_bytes=str(len(STATE))),
    "data_bytes one too many": file_bytes(data_bytes=len(STATE) + 1),
    "sha256 null": file_bytes(sha256=None),
    "sha256 of other data": file_bytes(sha256=hashlib.sha256(b"x").hexdigest()),
    "state without llama.cpp's magic": file_bytes(b"noise-noise"),
    "empty state": file_bytes(b""),
    "tokens changed after the checksum": file_bytes(tokens=[1, 2, 4]),
    "session id changed after the checksum": file_bytes(session_id="t"),
    "data one byte short": file_bytes()[:-1],
    "data one byte long": file_bytes() + b"!",
    "another model": file_bytes(model={"name": "other"}),
    "same name, other file": file_bytes(model={"name": "m", "path": "/x.gguf", "size": 1, "mtime_ns": 1}),
}
FIXED = {  # (content, what went wrong before 0d70209)
    "tokens null": (file_bytes(tokens=None), "scan raises TypeError (len(None)); at start the server dies"),
    "tokens an int": (file_bytes(tokens=5), "scan raises TypeError (len(5)); at start the server dies"),
    "100k-deep JSON array header": (MAGIC + b"[" * 100_000 + b"]" * 100_000 + b"\n",
                                    "scan raises RecursionError (json.loads): not caught as ValueError"),
    "100k-deep JSON object header": (MAGIC + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
                                     "scan raises RecursionError (json.loads): not caught as ValueError"),
    "a NaN token": (file_bytes().replace(b"[1, 2, 3]", b"[NaN]"), "read raises ValueError (int(nan))"),
    "tokens strings": (file_bytes(tokens=["x"]), "read raises ValueError (int('x')): the model's load fails"),
    "model a list": (file_bytes(model=[1]), "read raises TypeError (dict([1])): the model's load fails"),
    "model a string": (file_bytes(model="m"), "read raises ValueError (dict('m')): the model's load fails"),
    "model null": (file_bytes(model=None), "read raises TypeError (dict(None)): the model's load fails"),
    "data_bytes 2^40": (file_bytes(data_bytes=1 << 40), "read raises MemoryError (f.read(2**40 + 1) allocates)"),
    "data_bytes 2^63": (file_bytes(data_bytes=1 << 63), "read raises OverflowError (f.read(2**63 + 1))"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_broken_or_foreign_session_file_is_skipped_or_refused(tmp_path: Path, name: str) -> None:
    assert outcome(tmp_path, REFUSED[name]) in ("skipped", "refused")


@pytest.mark.parametrize("name", sorted(FIXED))
def test_a_session_header_with_wrong_types_is_skipped_or_refused(tmp_path: Path, name: str) -> None:
    assert outcome(tmp_path, FIXED[name][0]) in ("skipped", "refused"), FIXED[name][1]


def test_every_truncation_of_a_session_file_is_refused(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path / "s")
    ref = files.write(IDENTITY, SavedSession("s", list(range(50)), STATE_MAGIC + bytes(range(256)) * 4))
    whole = ref.path.read_bytes()
    ref.path.unlink()
    results = {outcome(tmp_path, whole[:n]) for n in range(len(whole))}
    assert results <= {"skipped", "refused"}, results
    assert outcome(tmp_path, whole) == "read"


def test_bit_flips_in_the_state_are_refused(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path / "s")
    ref = files.write(IDENTITY, SavedSession("s", list(range(50)), STATE_MAGIC + bytes(range(256)) * 4))
    whole = ref.path.read_bytes()
    data_at = whole.index(b"\n", len(MAGIC)) + 1
    rng = random.Random(21)
    for _ in range(300):
        flipped = bytearray(whole)
        at = rng.randrange(data_at, len(whole))
        flipped[at] ^= 1 << rng.randrange(8)
        assert outcome(tmp_path, bytes(flipped)) in ("skipped", "refused")


def test_a_bit_flipped_in_the_headers_tokens_is_refused(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path / "s")
    ref = files.write(IDENTITY, SavedSession("s", [11, 12, 13], STATE))
    whole = ref.path.read_bytes()
    flipped = whole.replace(b"[11,12,13]", b"[10,12,13]")
    assert flipped != whole
    assert outcome(tmp_path, flipped) in ("skipped", "refused")


def _chat(url: str, session_id: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": MODEL, "session_id": session_id, "max_tokens": 4,
        "messages": [{"role": "user", "content": "hello"}]})


def _garbage_sessions(model_path: Path, tmp_path: Path) -> Path:
    """The right model's identity, a correct checksum, and llama.cpp state bytes that are noise."""
    sessions = tmp_path / "sessions"
    identity = model_identity(MODEL, model_path)
    files = SessionFiles(sessions)
    rng = random.Random(21)
    noise = bytes(rng.randrange(256) for _ in range(64 << 10))
    files.write(identity, SavedSession("noise", [1, 2, 3, 4], noise))
    files.write(identity, SavedSession("magic noise", [1, 2, 3, 4], STATE_MAGIC + noise))  # past the magic check
    files.write(identity, SavedSession("magic only", [1, 2, 3, 4], STATE_MAGIC))
    files.write(identity, SavedSession("short", [1, 2, 3, 4], os.urandom(7)))
    return sessions


def test_a_garbage_state_with_a_valid_checksum_does_not_crash_the_server(model_path: Path, tmp_path: Path) -> None:
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048", "--sessions-dir",
                 str(_garbage_sessions(model_path, tmp_path)), "--log-level", "critical"]) as (url, proc):
        seen = []
        for sid in ("noise", "magic noise", "magic only", "short") * 2:
            r = _chat(url, sid)
            seen.append((sid, r.status_code))
            assert proc.poll() is None, f"the server died restoring session {sid!r}"
            assert _chat(url, "fresh").status_code == 200
        print(f"garbage sessions answer {seen}")
        stats = httpx.get(f"{url}/v1/stats", timeout=10).json()
        assert stats["num_busy_slots"] == 0, stats
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_a_garbage_state_is_refused_not_a_500(model_path: Path, tmp_path: Path) -> None:
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048", "--sessions-dir",
                 str(_garbage_sessions(model_path, tmp_path)), "--log-level", "critical"]) as (url, proc):
        codes = {sid: _chat(url, sid).status_code for sid in ("noise", "magic noise", "magic only", "short")}
        assert all(code < 500 for code in codes.values()), codes  # the broken states are dropped at import: 200s


def test_a_server_starts_with_a_hostile_file_in_its_sessions_dir(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir(mode=0o700)
    (sessions / ("b" * 32 + ".bfsession")).write_bytes(file_bytes(tokens=None, model={"name": MODEL}))
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048", "--sessions-dir", str(sessions),
                 "--log-level", "critical"], timeout_s=60) as (url, proc):
        assert _chat(url, "fresh").status_code == 200
