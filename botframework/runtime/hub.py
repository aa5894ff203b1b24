"""Hugging Face hub files: `hf:owner/repo/path/to/file.gguf` specs over huggingface_hub.

    "hf:owner/repo" (a repo of several quantizations) ─► choose_remote / choose_cached
        ─► "hf:owner/repo/<the best that fits the memory budget>.gguf"
    "hf:owner/repo/dir/file.gguf" ─► parse_spec ─► ("owner/repo", "dir/file.gguf")
        download(spec, hf_cache)     ─► hf_hub_download(...)                    (network)
        find_cached(spec, hf_cache)  ─► hf_hub_download(..., local_files_only)  (no network)
        list_cached(hf_cache)        ─► scan_cache_dir: every cached .gguf
    ─► snapshot path <hf_cache>/models--owner--repo/snapshots/<rev>/dir/file.gguf

huggingface_hub is imported inside each function: only hub users pay for its import, and
every failure it can raise is turned into our own ModelError subclasses here.
Callers (pull.py) check the returned file is a GGUF.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from botframework.config import pick_fitting
from botframework.errors import InvalidRequestError, ModelFetchError, ModelNotFoundError

HF_PREFIX = "hf:"


def is_repo_spec(spec: str) -> bool:
    """`hf:owner/repo`: a whole repo, of which we choose the file."""
    parts = spec[len(HF_PREFIX):].split("/") if spec.startswith(HF_PREFIX) else []
    return len(parts) == 2 and all(parts) and not parts[1].endswith(".gguf")


_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def choose_file(repo_id: str, files: Sequence[tuple[str, int]], budget_bytes: int) -> str:
    """The repo's model file to load: of its .gguf files (a split model counted as its first
    shard with the size of all; projectors for images left out), the best that fits
    (config.pick_fitting). `files`: (path in the repo, size in bytes)."""
    sizes: dict[str, int] = {}
    for path, size in files:
        name = path.rsplit("/", 1)[-1].lower()
        if not name.endswith(".gguf") or "mmproj" in name:
            continue
        shard = _SHARD.search(path)
        key = path[:shard.start()] + "-00001-of-" + shard[2] + ".gguf" if shard else path
        sizes[key] = sizes.get(key, 0) + size
    if not sizes:
        raise ModelNotFoundError(f"the Hugging Face repo {repo_id} has no .gguf model file")
    return pick_fitting(sizes, budget_bytes)


def choose_remote(spec: str, budget_bytes: int) -> str:
    """`hf:owner/repo` -> `hf:owner/repo/<file>`, from the repo's file list (network)."""
    repo_id = spec[len(HF_PREFIX):]
    try:
        from huggingface_hub import HfApi

        files = [(item.path, int(getattr(item, "size", 0) or 0))
                 for item in HfApi().list_repo_tree(repo_id, recursive=True) if hasattr(item, "size")]
    except Exception as exc:  # offline, 404, gated repo, auth: all "could not fetch"
        raise ModelFetchError(f"could not list the files of Hugging Face repo {repo_id}: "
                              f"{type(exc).__name__}: {exc}\nhint: {_offline_hint()}") from exc
    return f"{HF_PREFIX}{repo_id}/{choose_file(repo_id, files, budget_bytes)}"


def choose_cached(spec: str, hf_cache: Path, budget_bytes: int) -> str:
    """`hf:owner/repo` -> the best fitting of its files already in the cache (no network)."""
    repo_id = spec[len(HF_PREFIX):]
    prefix = f"{spec}/"
    files = [(cached[len(prefix):], size) for cached, _path, size in list_cached(hf_cache) if cached.startswith(prefix)]
    if not files:
        raise ModelNotFoundError(f"no file of {spec} is in the local cache ({hf_cache}); "
                                 f"run `botframework pull {spec}` first")
    return f"{HF_PREFIX}{repo_id}/{choose_file(repo_id, files, budget_bytes)}"


def parse_spec(spec: str) -> tuple[str, str]:
    """`hf:owner/repo/dir/file.gguf` -> ("owner/repo", "dir/file.gguf")."""
    if not spec.startswith(HF_PREFIX):
        raise InvalidRequestError(f"not a hub spec: {spec!r}", param="model")
    parts = spec[len(HF_PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise InvalidRequestError(
            f"bad model spec {spec!r}: expected hf:owner/repo/path/to/file.gguf (or hf:owner/repo)",
            param="model")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def download(spec: str, hf_cache: Path, *, force: bool = False) -> Path:
    """Fetch the file into `hf_cache` (or find it there); ModelFetchError on any failure.

    Progress bars are huggingface_hub's own; HF_HUB_DISABLE_PROGRESS_BARS=1 turns them off
    (older releases have no per-call switch, and flipping the global one would leak).
    """
    repo_id, filename = parse_spec(spec)
    try:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo_id=repo_id, filename=filename,
                                cache_dir=str(hf_cache), force_download=force)
    except Exception as exc:  # offline, 404, gated repo, auth, disk: all "could not fetch"
        raise ModelFetchError(
            f"could not fetch {filename} from Hugging Face repo {repo_id}: "
            f"{type(exc).__name__}: {exc}\nhint: {_offline_hint()}") from exc
    return Path(local)


def find_cached(spec: str, hf_cache: Path) -> Path:
    """The cached snapshot path, without network; ModelNotFoundError when not cached."""
    repo_id, filename = parse_spec(spec)
    try:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo_id=repo_id, filename=filename,
                                cache_dir=str(hf_cache), local_files_only=True)
    except Exception as exc:  # with local_files_only every failure means "not cached"
        raise ModelNotFoundError(
            f"{spec} is not in the local cache ({hf_cache}); "
            f"run `botframework pull {spec}` first") from exc
    return Path(local)


def list_cached(hf_cache: Path) -> list[tuple[str, Path, int]]:
    """(spec, snapshot path, size in bytes) for every cached .gguf, newest revision per spec."""
    if not hf_cache.is_dir():
        return []
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(hf_cache)
    except Exception:  # no hub library or an odd cache: listing is best effort
        return []
    newest: dict[str, tuple[float, Path, int]] = {}
    for repo in info.repos:
        for revision in repo.revisions:
            for f in revision.files:
                if not f.file_name.endswith(".gguf"):
                    continue
                rel = f.file_path.relative_to(revision.snapshot_path).as_posix()
                spec = f"{HF_PREFIX}{repo.repo_id}/{rel}"
                seen = newest.get(spec)
                if seen is None or revision.last_modified > seen[0]:
                    newest[spec] = (revision.last_modified, f.file_path, f.size_on_disk)
    return [(spec, path, size) for spec, (_, path, size) in sorted(newest.items())]


def _offline_hint() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline:
        return "HF_HUB_OFFLINE is set, so the hub reads only its local cache"
    return ("check the network connection, the repo id and the file name (and HF_TOKEN for "
            "gated repos); with HF_HUB_OFFLINE=1 the hub reads only its local cache")
