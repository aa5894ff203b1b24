"""Fixtures shared by the native-layer tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from botframework.native.shim import ChatTemplates


@pytest.fixture(scope="module")
def family_templates() -> Iterator[dict[str, ChatTemplates]]:
    """Family name -> ChatTemplates over the vendored template, loaded once per module."""
    loaded: dict[str, ChatTemplates] = {}
    yield loaded
    for templates in loaded.values():
        templates.close()
