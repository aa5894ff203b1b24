"""POST /v1/cancel/{id}: stop a running or queued request (by its response id) or a session's,
on whichever loaded model runs it (a model that is not loaded runs nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.errors import ClosedError
from botframework.server.auth import require_api_key
from botframework.server.generation import get_registry

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/cancel/{target_id}")
async def cancel(target_id: str, http: HTTPRequest) -> dict[str, Any]:
    num_cancelled = 0
    for _name, handle in get_registry(http).loaded():
        try:
            num_cancelled += await asyncio.to_thread(handle.cancel, target_id)
        except ClosedError:  # unloaded meanwhile: it runs nothing
            continue
    return {"id": target_id, "object": "cancellation", "num_cancelled": num_cancelled}
