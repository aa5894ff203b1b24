"""create_app(settings): the FastAPI app; the model loads in lifespan, never at import time.

    uvicorn -> ExposeConnection (server/direct.py) -> CORS -> BodySizeLimit (pure ASGI, 413)
            -> FastAPI routes (auth as a dependency)
    lifespan: runtime_factory(settings) in a thread -> app.state.runtime
              (a failed load leaves runtime None: model routes 503, /health "degraded")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from botframework.server import errors
from botframework.server.direct import ExposeConnection
from botframework.server.limits import BodySizeLimit
from botframework.server.metrics import ServerMetrics
from botframework.server.routes import (
    cancel,
    capabilities,
    chat,
    completions,
    embeddings,
    health,
    infill,
    metrics,
    models,
    sessions,
    tokenize,
)
from botframework.server.runtime import Runtime, load_runtime
from botframework.server.settings import ServerSettings

log = logging.getLogger("botframework.server")

RuntimeFactory = Callable[[ServerSettings], Runtime]


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # outside even Starlette's ServerErrorMiddleware: ExposeConnection needs uvicorn's own `send`
        return ExposeConnection(super().build_middleware_stack())


def create_app(settings: ServerSettings | None = None, runtime_factory: RuntimeFactory | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    factory = runtime_factory or load_runtime

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            app.state.runtime = await asyncio.to_thread(factory, settings)
            log.info("serving model %r", app.state.runtime.model_id)
        except Exception as exc:  # noqa: BLE001 - keep serving /health and errors; say why the model is missing
            log.error("could not load model %r: %s", settings.model, exc)
            app.state.load_error = f"{type(exc).__name__}: {exc}"
        try:
            yield
        finally:
            runtime, app.state.runtime = app.state.runtime, None
            if runtime is not None:
                await asyncio.to_thread(runtime.close)

    from botframework import __version__

    app = _App(title="botframework", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # the docs UIs load assets from a CDN: no network
                  openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.runtime = None
    app.state.load_error = None
    app.state.metrics = ServerMetrics()
    errors.install(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        return errors.error_response(exc)

    for module in (health, models, chat, completions, infill, embeddings, tokenize, cancel, sessions, metrics,
                   capabilities):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    return app
