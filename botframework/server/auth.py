"""API-key authentication as a FastAPI dependency (not middleware: it must not touch streaming).

    Authorization: Bearer <key>  (or x-api-key: <key>) --hmac.compare_digest vs every key--> ok | 401
"""

from __future__ import annotations

import hmac

from fastapi import Request

from botframework.server.errors import APIError


def _matches(candidate: str, keys: tuple[str, ...]) -> bool:
    given = candidate.encode("utf-8")
    found = False
    for key in keys:  # compare against every key so the time does not reveal which one matched
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


async def require_api_key(request: Request) -> None:
    keys: tuple[str, ...] = request.app.state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    candidate = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not candidate or not _matches(candidate, keys):
        raise APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
                       type="authentication_error", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
