"""HTTP errors in OpenAI's shape, mapped by exception type (never by message text).

    BotframeworkError subclass --to_api_error()--> (status, type, param, code) --> {"error": {...}}
      InvalidRequestError: 400 with its own param and code (validation.py, runtime.requests)
    RequestValidationError (pydantic)  --> 400 invalid_request_error, param = the field
    starlette HTTPException (404 route, 405, ...)  --> same shape, its status
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from botframework import errors as bf

log = logging.getLogger("botframework.server")


class APIError(Exception):
    """An error the server itself decides on (auth, unknown model, no model loaded, a client
    that went away). Invalid input is an InvalidRequestError instead (validation.py)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers


def unsupported(param: str, what: str = "is not supported yet") -> bf.InvalidRequestError:
    """A field we accept in the schema but cannot honour (yet): a 400 naming it."""
    return bf.InvalidRequestError(f"'{param}' {what}", param=param, code="unsupported_parameter")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def to_api_error(exc: BaseException) -> APIError:
    """The one mapping from exceptions to HTTP status and OpenAI error type."""
    if isinstance(exc, APIError):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, bf.ContextLengthExceededError):
        return APIError(400, f"{message} (prompt: {exc.num_prompt_tokens} tokens, context: {exc.num_ctx} tokens)",
                        param=exc.param, code="context_length_exceeded")
    if isinstance(exc, bf.UnsupportedSchemaError):
        return APIError(400, message, param=exc.param, code="unsupported_schema")
    if isinstance(exc, bf.GrammarError):
        return APIError(400, message, param=exc.param, code="invalid_grammar")
    if isinstance(exc, bf.InvalidRequestError):
        return APIError(400, message, param=exc.param, code=exc.code)
    if isinstance(exc, bf.OutputValidationError):
        return APIError(500, message, type="server_error", code="output_validation_failed")
    if isinstance(exc, bf.ModelNotFoundError):
        return APIError(404, message, param="model", code="model_not_found")
    if isinstance(exc, bf.BusyError):
        retry = max(1, round(exc.retry_after_s))
        return APIError(503, message, type="server_busy", code="server_busy", headers={"Retry-After": str(retry)})
    if isinstance(exc, bf.ShuttingDownError):
        return APIError(503, message, type="service_unavailable", code="server_shutting_down",
                        headers={"Retry-After": "5"})
    if isinstance(exc, bf.StateRestoreError):
        return APIError(503, message, type="service_unavailable", code="state_restore_failed",
                        headers={"Retry-After": "1"})
    if isinstance(exc, (bf.ClosedError, bf.ModelError, bf.KVCacheFullError)):
        return APIError(503, message, type="service_unavailable", code="model_unavailable",
                        headers={"Retry-After": "1"})
    if isinstance(exc, bf.NativeError):
        return APIError(500, f"the engine failed: {message}", type="server_error", code="engine_error")
    if isinstance(exc, bf.CancelledError):
        return APIError(499, message, type="cancelled", code="cancelled")
    if isinstance(exc, TimeoutError):
        return APIError(503, "the model did not answer in time", type="service_unavailable", code="timeout",
                        headers={"Retry-After": "1"})
    log.exception("internal error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error", code="internal_error")


def error_response(exc: BaseException) -> JSONResponse:
    err = to_api_error(exc)
    return JSONResponse(error_body(err.message, err.type, err.param, err.code), status_code=err.status,
                        headers=err.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # pydantic reports union members and validators as extra path items; keep the field path
    loc = [p for p in loc if not p.startswith(("function-", "literal[", "list[", "str", "int", "dict["))]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON", None
    if first.get("type") == "missing" and not loc:
        return "The request body is missing", None
    msg = str(first.get("msg", "invalid request"))
    return (f"Invalid value for '{param}': {msg}" if param else msg), param


def validation_response(exc: RequestValidationError) -> JSONResponse:
    message, param = _validation_message(exc)
    return JSONResponse(error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(bf.BotframeworkError)
    async def _botframework(request: Request, exc: bf.BotframeworkError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)
