"""GET /metrics (Prometheus text) and GET /v1/stats (the scheduler's counters as JSON)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from botframework.errors import ClosedError
from botframework.server.auth import require_api_key
from botframework.server.generation import get_runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/metrics")
async def metrics(http: HTTPRequest) -> Response:
    server_metrics = http.app.state.metrics
    registry = http.app.state.registry
    snapshots: dict[str, dict[str, float]] = {}
    for info in registry.describe() if registry is not None else ():
        handle = registry.peek(info["id"])  # a model that is not loaded is not loaded for this
        snapshot: dict[str, float] = {"model_loaded": 0, "memory_bytes": info["memory_bytes"]}
        if handle is not None:
            try:
                snapshot.update(await asyncio.to_thread(handle.stats), **handle.worker_metrics(), model_loaded=1)
            except ClosedError:  # unloaded meanwhile
                pass
        snapshots[info["id"]] = snapshot
    server_metrics.engine.snapshots = snapshots
    return Response(generate_latest(server_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats")
async def stats(http: HTTPRequest, model: str | None = None) -> dict[str, Any]:
    runtime = await get_runtime(http, model)
    return {"model": runtime.model_id, **await asyncio.to_thread(runtime.stats), **runtime.worker_metrics(),
            # the server's, not the model's: tasks alive on the event loop (this request's among
            # them); a soak checks they come back to their baseline when idle
            "asyncio_tasks": len(asyncio.all_tasks())}
