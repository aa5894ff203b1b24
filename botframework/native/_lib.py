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
# spins this many times before it sleeps in the kernel; libgomp's default is 300,000 (~5 ms).
# Two costs pull apart:
# - spin too little and a decode's barriers sleep and wake: llama-bench here, 3,000 against
#   300,000, tg128 2-8% and pp64 ~3% slower; a server's stream 10.7% slower at 1 stream and
#   2.7% at 8 streams (10,000 against 3,000, medians of 12 alternating rounds; 20,000:
#   1.12x and 1.05x). Only one process ran its threads there; until 69fa916 the loading
#   thread's idle pool throttled every spin to 1,000, which hid this.
# - spin too long and a worker whose thread has finished its turn takes a core from what runs
#   next on a 2-core machine: the event loop and the client. One-sentence embeddings one at a
#   time (computed on the event loop): 30,000 against 3,000 0.81x (0 of 10 rounds ahead);
#   20,000 1.02x; 10,000 1.00x. After a request libgomp's default burns a core for ~5 ms (a
#   server started right after another one's stream paid that to its first token).
# 10,000 takes the first gain without the second cost. Set GOMP_SPINCOUNT to override.
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
DEFAULT_GOMP_SPINCOUNT = "10000"
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
