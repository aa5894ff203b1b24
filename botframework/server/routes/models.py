"""The declared models: list them with their state, load and unload them.

    GET  /v1/models, POST /v1/models/list   every declared model: OpenAI's card + state (loaded /
                                            loading / unloaded / failed), memory, idle time
    GET  /v1/models/{id}                    one of them (by name or alias; 404 lists the names)
    POST /v1/models/{id}/load | /unload     load now / unload now (409-free: unload of a model
                                            with requests in flight is a 503 busy); load also
                                            takes a cached catalog name or a .gguf path inside the
                                            configured folders, and declares it first
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.errors import ModelLoadError, ModelNotFoundError
from botframework.runtime.registry import Registry
from botframework.server.auth import require_api_key
from botframework.server.errors import APIError
from botframework.server.generation import get_registry
from botframework.server.runtime import Runtime
from botframework.server.settings import ServerSettings

router = APIRouter(dependencies=[Depends(require_api_key)])


def _card(registry: Registry[Runtime], info: dict[str, Any], created: int) -> dict[str, Any]:
    handle = registry.peek(info["id"])
    meta: dict[str, Any] = {"state": info["state"], "memory_bytes": info["memory_bytes"], "idle_s": info["idle_s"],
                            "num_in_flight": info["num_in_flight"], "keep_alive_s": info["keep_alive_s"],
                            "load": info["load"], "aliases": info["aliases"], "num_loads": info["num_loads"]}
    if info["error"]:
        meta["error"] = info["error"]
    if info.get("placement"):
        meta["placement"] = info["placement"]  # n_gpu_layers, devices (GPUs, RPC servers)
    if getattr(handle, "kind", None) == "remote":
        meta.update(kind="remote", replicas=handle.describe())  # type: ignore[union-attr]
    elif handle is not None:
        meta.update(n_ctx=handle.n_ctx, n_vocab=handle.n_vocab, kind=getattr(handle, "kind", "chat"),
                    num_slots=getattr(getattr(handle, "worker", None), "num_slots", None))
        created = getattr(handle, "created", created)
    return {"id": info["id"], "object": "model", "created": created, "owned_by": "botframework", "meta": meta}


def _cards(http: HTTPRequest) -> list[dict[str, Any]]:
    registry = get_registry(http)
    started: int = http.app.state.started
    return [_card(registry, info, started) for info in registry.describe()]


def _find(http: HTTPRequest, model_id: str) -> dict[str, Any]:
    name = get_registry(http).entry(model_id).name  # ModelNotFoundError: a 404 listing the names (errors.py)
    return next(card for card in _cards(http) if card["id"] == name)


@router.get("/v1/models")
async def list_models(http: HTTPRequest) -> dict[str, Any]:
    return {"object": "list", "data": _cards(http)}


@router.post("/v1/models/list")
async def list_models_post(http: HTTPRequest) -> dict[str, Any]:
    return await list_models(http)


@router.post("/v1/models/{model_id:path}/load")
async def load_model(model_id: str, http: HTTPRequest) -> dict[str, Any]:
    """Load a declared model, or first declare one the server may serve: a cached catalog
    model or a .gguf file inside its configured folders (SDKs' New("path/to/model.gguf"))."""
    registry = get_registry(http)
    try:
        name = registry.entry(model_id).name
    except ModelNotFoundError:
        known = registry.find(lambda entry: _same_file(entry.source, model_id))
        if known is not None:  # a file declared at start (--model PATH), named by its path
            name = known.name
        else:
            settings: ServerSettings = http.app.state.settings
            entry = await asyncio.to_thread(settings.entry_for_load, model_id)
            try:
                name = registry.declare(entry, same=lambda other: _same_file(other.source, entry.source)).name
            except ValueError as exc:
                raise APIError(400, str(exc), param="model", code="model_name_taken") from None
    try:
        await registry.load(name)
    except ModelLoadError as exc:
        raise APIError(503, f"The model is not available: {exc}", type="service_unavailable",
                       code="model_unavailable", headers={"Retry-After": "5"}) from None
    return _find(http, name)


def _same_file(source: str, spec: str) -> bool:
    """A declared model's source and a load request's name are the same: equal, or one .gguf
    file by two paths."""
    if source == spec:
        return True
    if not (source.endswith(".gguf") and spec.endswith(".gguf")):
        return False
    try:
        return Path(source).resolve() == Path(spec).resolve()
    except OSError:
        return False


@router.post("/v1/models/{model_id:path}/unload")
async def unload_model(model_id: str, http: HTTPRequest) -> dict[str, Any]:
    _find(http, model_id)
    unloaded = await get_registry(http).unload(model_id)
    return {**_find(http, model_id), "unloaded": unloaded}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, http: HTTPRequest) -> dict[str, Any]:
    return _find(http, model_id)
