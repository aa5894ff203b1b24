"""L3 server: the OpenAI-compatible HTTP API over one loaded model.

    serve(settings) -> check_bind -> uvicorn -> create_app(settings) -> routes
        -> runtime.handle.ModelHandle
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from botframework.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args, **kwargs) -> FastAPI:  # type: ignore[no-untyped-def]
    from botframework.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(settings: ServerSettings) -> None:
    """Run the server in this thread until interrupted (the model loads at startup)."""
    import uvicorn

    from botframework.server.app import create_app as _create_app
    from botframework.server.drain import DrainingServer
    from botframework.server.logs import log_config

    settings.check_bind()
    app = _create_app(settings)
    # the drain (drain.py) finishes or ends every request first; uvicorn's own grace then only
    # closes connections that are idle by then
    # one line per event, no colours without a tty, request ids (logs.py): fit for journald
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=5, access_log=settings.log_level == "debug",
                            log_config=log_config(settings.log_level, tty=sys.stderr.isatty()))
    DrainingServer(config, app, settings.shutdown_grace_s).run()


__all__ = ["ServerSettings", "create_app", "serve"]
