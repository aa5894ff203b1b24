"""POST /v1/cancel/{id}: stop a running or queued request (by its response id) or a session's."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.generation import get_runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/cancel/{target_id}")
async def cancel(target_id: str, http: HTTPRequest) -> dict[str, Any]:
    runtime = get_runtime(http)
    num_cancelled = await asyncio.to_thread(runtime.cancel, target_id)
    return {"id": target_id, "object": "cancellation", "num_cancelled": num_cancelled}
