"""Load the compiled cffi module once and initialise llama.cpp's backends.

`ffi`/`lib` are only for use inside botframework.native; everything else goes through the
wrappers. Importing is cheap; `lib()` does the one-time llama_backend_init.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from botframework.errors import BotframeworkError

# ggml's CPU backend runs its threads with OpenMP (libgomp), which reads this when it loads,
# with the module below. A thread that waits (at a barrier in a graph, or for the next decode)
# spins this many times (~17 ns each here) before it sleeps; libgomp's default is 300,000
# (~5 ms). Between two decodes our engine thread runs ~0.2 ms of Python (and the clients and
# the event loop need a core), so a worker spinning through it takes a core from them; after a
# request, the default also burns both cores for ~5 ms (a server started right after another
# one's stream paid that to its first token). 3,000 (~50 us) still covers the waits inside a
# graph: llama-bench pp256/tg128 unchanged. Measured server against server, same run: +0.7%
# tokens/s at 1 stream (inter-token time too), +4% at 8; 300 and 30,000 against 3,000: -2.6%
# and ~-5% at 1 stream. (Two copies of one server land up to ~3% apart per run here, so only
# the last is clearly outside the noise.) Set GOMP_SPINCOUNT to override.
# Only for this load: child processes (a llama-server a benchmark starts) keep their default.
#
# OMP_WAIT_POLICY=active: with more OpenMP threads in the process than CPUs, libgomp waits
# with a "throttled" spin count instead: 100 by default, 1,000 when the policy is active
# (never above GOMP_SPINCOUNT). Every thread that runs a decode has its own team, so two
# engine threads (a chat and an embedding model), or an embedding computed on the event loop
# beside the engine thread's decodes, are already more threads than 2 cores: at 100 spins
# (~2 us) a thread sleeps at nearly every barrier inside a graph (33 context switches per
# one-sentence embedding against 5; ~0.6 ms more per request here). At 1,000 it spins through
# most of them. Spinning longer is safe only because two token steps never run on more threads
# than there are cores at once (native/cores.py): two teams that did spun waiting for each other
# (two models decoding at once fell to ~40% of their tokens/s). Set OMP_WAIT_POLICY to override.
# Throttling stops once no more than one thread holds a team: native/omp.py lets idle ones go.
DEFAULT_GOMP_SPINCOUNT = "3000"
_set_env = {name: value for name, value in (("GOMP_SPINCOUNT", DEFAULT_GOMP_SPINCOUNT),
                                             ("OMP_WAIT_POLICY", "active")) if name not in os.environ}
os.environ.update(_set_env)
try:
    from botframework.native._bf_ffi import ffi
    from botframework.native._bf_ffi import lib as _raw_lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise BotframeworkError(
        "botframework's native module is not built: install the package with `pip install .` "
        f"({exc})") from exc
finally:
    for _name in _set_env:
        del os.environ[_name]

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
