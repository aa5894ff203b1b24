"""Fixtures shared by every test layer.

    model_path (session)  pull("smollm2-135m-instruct") -> the cached GGUF (downloaded once)
    model      (module)   botframework.native.Model over it, closed after the module

Native imports stay inside the fixtures so that tests which never ask for a model (unit
tests on fakes) run without the compiled extension. BOTFRAMEWORK_BLOCK_NATIVE=1 proves it (CI
runs tests/unit and tests/server so): the compiled module cannot be imported, and tests marked
`native` are skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from botframework.native import Model

TEST_MODEL = "smollm2-135m-instruct"
NATIVE_BLOCKED = os.environ.get("BOTFRAMEWORK_BLOCK_NATIVE") == "1"


class _BlockNative:
    """A meta-path finder that makes the compiled module unimportable."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "botframework.native._bf_ffi":
            raise ImportError("the compiled module is blocked (BOTFRAMEWORK_BLOCK_NATIVE=1)")


if NATIVE_BLOCKED:
    sys.meta_path.insert(0, _BlockNative())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if NATIVE_BLOCKED:
        skip = pytest.mark.skip(reason="needs the compiled module (BOTFRAMEWORK_BLOCK_NATIVE=1)")
        for item in items:
            if "native" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The small test model, fetched into the cache on first use (no network once cached)."""
    from botframework.errors import ModelFetchError
    from botframework.runtime.pull import pull

    try:
        return pull(TEST_MODEL)
    except ModelFetchError as exc:  # a test run without its model is a failed run, not a skipped one
        pytest.fail(f"cannot fetch the test model {TEST_MODEL!r}: {exc}")


@pytest.fixture(scope="module")
def model(model_path: Path) -> Iterator[Model]:
    from botframework.native import Model

    loaded = Model(model_path)
    try:
        yield loaded
    finally:
        loaded.close()
