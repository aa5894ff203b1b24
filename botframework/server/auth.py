"""API-key authentication as a FastAPI dependency (not middleware: it must not touch streaming).

    Authorization: Bearer <key>  (or x-api-key: <key>) --hmac.compare_digest vs every key--> ok | 401
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from botframework.server.errors import APIError


def _matches(candidate: str, keys: tuple[str, ...]) -> bool:
    given = candidate.encode("utf-8")
    found = False
    for key in keys:  # compare against every key so the time does not reveal which one matched
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


def api_key_ok(keys: tuple[str, ...], headers: Mapping[str, str]) -> bool:
    """No keys configured, or the request carries one of them (Bearer, or x-api-key);
    `headers` by lower-case name."""
    if not keys:
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    candidate = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
    return bool(candidate) and _matches(candidate, keys)


async def require_api_key(request: Request) -> None:
    if not api_key_ok(request.app.state.settings.api_keys, request.headers):
        raise APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
                       type="authentication_error", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
