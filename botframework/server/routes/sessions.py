"""Chat sessions: a session_id keeps a conversation's KV state between turns.

    POST   /v1/sessions[?model=M]        -> {"id": "sess-..."}   (any client-chosen id works too)
    GET    /v1/sessions/{id}[?model=M]   -> where its state is: busy / idle in a slot / evicted to RAM
                                            or disk / parked while its model is unloaded
    DELETE /v1/sessions/{id}[?model=M]   -> cancel its requests, free its slot and stored state

Without `model`, GET and DELETE look in every loaded model and in the sessions of unloaded ones:
a session lives in whichever model its turns were sent to.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.errors import ClosedError
from botframework.server.auth import require_api_key
from botframework.server.errors import APIError
from botframework.server.generation import get_registry, get_runtime
from botframework.server.runtime import Runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


def _known(http: HTTPRequest) -> set[str]:
    if not hasattr(http.app.state, "created_sessions"):
        http.app.state.created_sessions = set()
    return http.app.state.created_sessions  # type: ignore[no-any-return]


async def _places(http: HTTPRequest, model: str | None) -> list[tuple[str, Runtime]]:
    """The named model (leased, loaded if need be), or every loaded one."""
    if model is not None:
        runtime = await get_runtime(http, model)
        return [(runtime.model_id, runtime)]
    return get_registry(http).loaded()


def _not_found(session_id: str) -> APIError:
    return APIError(404, f"session '{session_id}' not found", param="session_id", code="session_not_found")


@router.post("/v1/sessions")
async def create_session(http: HTTPRequest, model: str | None = None) -> dict[str, Any]:
    runtime = await get_runtime(http, model)
    session_id = f"sess-{uuid.uuid4().hex}"
    _known(http).add(session_id)
    return {"id": session_id, "object": "session", "model": runtime.model_id, "state": "new",
            "num_cached_tokens": 0}


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, http: HTTPRequest, model: str | None = None) -> dict[str, Any]:
    for model_id, runtime in await _places(http, model):
        try:
            info = await asyncio.to_thread(runtime.session_info, session_id)
        except ClosedError:  # unloaded meanwhile: its sessions are parked (below)
            continue
        if info is not None:
            return {"id": session_id, "object": "session", "model": model_id, **info}
    parked = get_registry(http).parked_session(session_id, model)
    if parked is not None:
        return {"id": session_id, "object": "session", "model": parked[0], "state": "parked",
                "num_cached_tokens": parked[1]}
    if session_id not in _known(http):
        raise _not_found(session_id)
    return {"id": session_id, "object": "session", "model": model, "state": "new", "num_cached_tokens": 0}


@router.delete("/v1/sessions/{session_id}")
async def delete_session(session_id: str, http: HTTPRequest, model: str | None = None) -> dict[str, Any]:
    found = False
    for _model_id, runtime in await _places(http, model):
        try:
            found = await asyncio.to_thread(runtime.drop_session, session_id) or found
        except ClosedError:
            continue
    found = get_registry(http).drop_parked_session(session_id, model) or found
    known = session_id in _known(http)
    _known(http).discard(session_id)
    if not (found or known):
        raise _not_found(session_id)
    return {"id": session_id, "object": "session.deleted", "deleted": True}
