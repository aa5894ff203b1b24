"""GET /health: open without an API key; 200 "ok" when the model serves, 503 "degraded" if not."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health")
async def health(http: HTTPRequest) -> JSONResponse:
    state = http.app.state
    if state.runtime is not None:
        return JSONResponse({"status": "ok", "model": state.runtime.model_id})
    status = "degraded" if state.load_error else "loading"
    return JSONResponse({"status": status, "model": None, "error": state.load_error}, status_code=503)
