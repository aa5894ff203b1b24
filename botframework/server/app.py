"""create_app(settings): the FastAPI app; the model loads in lifespan, never at import time.

    uvicorn -> ExposeConnection (server/direct.py) -> CORS -> BodySizeLimit (pure ASGI, 413)
            -> FastAPI routes (auth as a dependency)
    lifespan: Registry(settings.model_entries(), loader) -> app.state.registry; the models
              marked preload load (in threads; a failure is that model's state: its requests
              get 503, the others serve), then a keep-alive sweep runs every second
    routes:   get_runtime(http, name) leases a model (loading it on first use) until the
              response is sent: ReleaseLeases, around the app, gives it back
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import pkgutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from botframework.runtime.registry import ModelEntry, Registry, sweep_forever
from botframework.runtime.session_files import SessionFiles
from botframework.server import errors
from botframework.server.direct import ExposeConnection
from botframework.server.drain import DrainGate
from botframework.server.fastpath import FastRoutes
from botframework.server.generation import ReleaseLeases
from botframework.server.limits import BodySizeLimit
from botframework.server.logs import RequestIdMiddleware
from botframework.server.metrics import ServerMetrics
from botframework.server.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from botframework.server.remote import RemoteRoutes
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
from botframework.server.runtime import Runtime, estimate_bytes, load_entry, measure_bytes
from botframework.server.settings import ServerSettings
from botframework.server.write_timeout import StreamWriteTimeout

log = logging.getLogger("botframework.server")

RuntimeFactory = Callable[[ServerSettings], Runtime]     # tests: one fake runtime for every entry
EntryLoader = Callable[[ModelEntry], Runtime]


def _protocol_adapters() -> list[ModuleType]:
    """The other protocols' routes (Ollama, OpenAI Responses, Anthropic Messages, ...): every
    module in server/adapters/ with a `router`, by name. Each maps its protocol onto the same
    internal requests and deltas as the routes above (see adapters/__init__.py)."""
    from botframework.server import adapters

    names = sorted(info.name for info in pkgutil.iter_modules(adapters.__path__) if not info.name.startswith("_"))
    modules = [importlib.import_module(f"{adapters.__name__}.{name}") for name in names]
    return [module for module in modules if hasattr(module, "router")]


_OTEL_PROXIES = {"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"}


def _telemetry_off_unless_configured() -> dict[str, Any]:
    """FastAPI's native OpenTelemetry (0.16x) asks on every request whether a tracer, meter or
    logger provider has been configured: three provider lookups before any middleware, ~4% of
    the event loop's time for a one-sentence embedding. Decided once here instead: with an SDK
    provider already set (opentelemetry-instrument, or the app's host configured one before
    create_app) or FASTAPI_OTEL_AUTO_CONFIGURE=true, FastAPI keeps its telemetry; else it is
    off for this app. (FastAPI without the option: nothing to turn off.)"""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    try:
        from opentelemetry import _logs, metrics, trace
    except ImportError:
        return {}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider())
    if any(type(provider).__name__ not in _OTEL_PROXIES for provider in providers):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # ExposeConnection, outside even Starlette's ServerErrorMiddleware: it needs uvicorn's own
        # `send` (direct streaming); StreamWriteTimeout, right inside it: drops a client that
        # stops reading (write_timeout.py), on the short dispatch's streams too
        # FastRoutes: plain JSON requests to the generation and embedding routes skip FastAPI's
        # layers (fastpath.py; ~0.7 ms of a first token); ReleaseLeases returns the models of
        # every other request once its response is all sent
        # DrainGate, outermost of all: a draining server refuses new work (drain.py); then,
        # when some models are remote, RemoteRoutes forwards their requests (remote.py)
        app: ASGIApp = ExposeConnection(StreamWriteTimeout(
            FastRoutes(ReleaseLeases(super().build_middleware_stack()), self, {
                "/v1/embeddings": (EmbeddingRequest, embeddings.embeddings),
                "/v1/completions": (CompletionRequest, completions.completions),
                "/v1/chat/completions": (ChatCompletionRequest, chat.chat_completions),
            }),
            self.state.settings.stream_write_timeout_s))
        remote = [name for entry in self.state.settings.model_entries() if entry.remote is not None
                  for name in entry.names]
        if remote:
            app = RemoteRoutes(app, self, remote)
        return RequestIdMiddleware(DrainGate(app, self))  # outermost: every log line of a request has its id


def create_app(settings: ServerSettings | None = None, runtime_factory: RuntimeFactory | None = None, *,
               loader: EntryLoader | None = None) -> FastAPI:
    """The app. `loader` loads one declared model (default: load_entry, the real engine);
    `runtime_factory(settings)` is the single-model form tests use."""
    settings = settings or ServerSettings()
    if loader is None:
        if runtime_factory is not None:
            factory = runtime_factory

            def loader(entry: ModelEntry) -> Runtime:
                return factory(settings)
        else:
            def loader(entry: ModelEntry) -> Runtime:
                return load_entry(settings, entry)
    load = loader
    real = runtime_factory is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry: Registry[Runtime] = Registry(
            settings.model_entries(), load, memory_budget_bytes=settings.memory_budget_bytes(),
            estimate_bytes=(lambda entry: estimate_bytes(settings, entry)) if real else None,
            measure_bytes=measure_bytes if real else None,
            session_files=SessionFiles(settings.sessions_dir) if settings.sessions_dir is not None else None)
        app.state.registry = registry
        log.info("models: %s (memory budget %d MiB)", ", ".join(registry.names()),
                 (registry.memory_budget_bytes or 0) >> 20)
        await registry.preload()
        app.state.starting = False
        sweeper = asyncio.ensure_future(sweep_forever(registry))
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            app.state.registry = None
            await registry.close()

    from botframework import __version__

    app = _App(title="botframework", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # the docs UIs load assets from a CDN: no network
                  openapi_url="/openapi.json", **_telemetry_off_unless_configured())
    app.state.settings = settings
    app.state.registry = None
    app.state.starting = True
    app.state.draining = False
    app.state.started = int(time.time())
    app.state.metrics = ServerMetrics()
    errors.install(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        return errors.error_response(exc)

    for module in (health, models, chat, completions, infill, embeddings, tokenize, cancel, sessions, metrics,
                   capabilities, *_protocol_adapters()):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    return app
