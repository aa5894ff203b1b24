from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


@pytest.fixture
def run() -> Callable[..., object]:
    return lambda coro: asyncio.run(asyncio.wait_for(coro, 30))
