"""Load the compiled cffi module once and initialise llama.cpp's backends.

`ffi`/`lib` are only for use inside botframework.native; everything else goes through the
wrappers. Importing is cheap; `lib()` does the one-time llama_backend_init.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from botframework.errors import BotframeworkError

try:
    from botframework.native._bf_ffi import ffi, lib as _raw_lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise BotframeworkError(
        "botframework's native module is not built: install the package with `pip install .` "
        f"({exc})") from exc

_init_lock = threading.Lock()
_initialised = False

# ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 cont
_LOG_LEVELS = {"debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4, "none": 99}


def lib() -> Any:
    """The raw cffi library, with the llama.cpp backend initialised."""
    global _initialised
    if not _initialised:
        with _init_lock:
            if not _initialised:
                level = os.environ.get("BOTFRAMEWORK_LLAMA_LOG", "error").lower()
                _raw_lib.bf_log_set_level(_LOG_LEVELS.get(level, 4))
                _raw_lib.llama_backend_init()
                _initialised = True
    return _raw_lib


def set_log_level(level: str) -> None:
    """Set the minimum llama.cpp log level ('debug', 'info', 'warn', 'error', 'none')."""
    if level not in _LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {sorted(_LOG_LEVELS)}")
    lib().bf_log_set_level(_LOG_LEVELS[level])


__all__ = ["ffi", "lib", "set_log_level"]
