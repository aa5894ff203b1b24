"""Chat sessions: a session_id keeps a conversation's KV state between turns.

    POST   /v1/sessions        -> {"id": "sess-..."}   (any client-chosen id works too)
    GET    /v1/sessions/{id}   -> where its state is: busy / idle in a slot / evicted to RAM or disk
    DELETE /v1/sessions/{id}   -> cancel its requests, free its slot and stored state
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.errors import APIError
from botframework.server.generation import get_runtime

router = APIRouter(dependencies=[Depends(require_api_key)])


def _known(http: HTTPRequest) -> set[str]:
    if not hasattr(http.app.state, "created_sessions"):
        http.app.state.created_sessions = set()
    return http.app.state.created_sessions  # type: ignore[no-any-return]


@router.post("/v1/sessions")
async def create_session(http: HTTPRequest) -> dict[str, Any]:
    runtime = await get_runtime(http)
    session_id = f"sess-{uuid.uuid4().hex}"
    _known(http).add(session_id)
    return {"id": session_id, "object": "session", "model": runtime.model_id, "state": "new",
            "num_cached_tokens": 0}


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, http: HTTPRequest) -> dict[str, Any]:
    runtime = await get_runtime(http)
    info = await asyncio.to_thread(runtime.session_info, session_id)
    if info is None:
        if session_id not in _known(http):
            raise APIError(404, f"session '{session_id}' not found", param="session_id", code="session_not_found")
        info = {"state": "new", "num_cached_tokens": 0}
    return {"id": session_id, "object": "session", "model": runtime.model_id, **info}


@router.delete("/v1/sessions/{session_id}")
async def delete_session(session_id: str, http: HTTPRequest) -> dict[str, Any]:
    runtime = await get_runtime(http)
    found = await asyncio.to_thread(runtime.drop_session, session_id)
    known = session_id in _known(http)
    _known(http).discard(session_id)
    if not (found or known):
        raise APIError(404, f"session '{session_id}' not found", param="session_id", code="session_not_found")
    return {"id": session_id, "object": "session.deleted", "deleted": True}
