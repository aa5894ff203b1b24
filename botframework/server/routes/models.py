"""GET /v1/models, GET /v1/models/{id}, POST /v1/models/list: the one model this server runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.errors import model_not_found
from botframework.server.generation import get_runtime
from botframework.server.runtime import Runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


def _card(runtime: Runtime) -> dict[str, Any]:
    return {"id": runtime.model_id, "object": "model", "created": runtime.created, "owned_by": "botframework",
            "meta": {"n_ctx": runtime.n_ctx, "n_vocab": runtime.n_vocab}}


@router.get("/v1/models")
async def list_models(http: HTTPRequest) -> dict[str, Any]:
    return {"object": "list", "data": [_card(get_runtime(http))]}


@router.post("/v1/models/list")
async def list_models_post(http: HTTPRequest) -> dict[str, Any]:
    return await list_models(http)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, http: HTTPRequest) -> dict[str, Any]:
    runtime = get_runtime(http)
    if model_id != runtime.model_id:
        raise model_not_found(model_id)
    return _card(runtime)
