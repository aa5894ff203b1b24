"""GET /health: open without an API key. 200 "ok" while the default model serves or can be
loaded on demand; 503 "loading" while the models marked preload load at start, "degraded" if
the default model failed to load, "draining" once a SIGTERM has started the drain (drain.py).
Every declared model's state is listed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health")
async def health(http: HTTPRequest) -> JSONResponse:
    registry = http.app.state.registry
    if registry is None or http.app.state.starting:
        return JSONResponse({"status": "loading", "model": None, "error": None}, status_code=503)
    if getattr(http.app.state, "draining", False):
        return JSONResponse({"status": "draining", "model": None, "error": None}, status_code=503,
                            headers={"Retry-After": "5"})
    models = registry.describe()
    default = models[0]
    body = {"model": default["id"], "models": {m["id"]: m["state"] for m in models}}
    if default["state"] == "failed":
        return JSONResponse({"status": "degraded", "error": default["error"], **body}, status_code=503)
    return JSONResponse({"status": "ok", **body})
