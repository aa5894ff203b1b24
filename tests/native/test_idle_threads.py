"""Idle compute threads sleep: after a request, the process burns (almost) no CPU (and an
engine thread idle for a second lets its OpenMP workers go altogether: native/omp.py).

ggml's CPU threads wait with OpenMP, which spins GOMP_SPINCOUNT times before it sleeps
(libgomp's default 300,000: ~5 ms a thread here, after every request, and through every gap
between two decodes that is shorter). botframework/native/_lib.py loads it with 10,000 unless
the user set the variable, and does not pass that on to child processes. It also loads it
with OMP_WAIT_POLICY=active, whose only effect under that spin count is the "throttled" spin
libgomp falls back to once the process has more OpenMP threads than CPUs (every thread that
runs a decode has a team of its own: a second model's engine thread is enough on 2 cores):
1,000 spins there instead of 100, which cost a chat model beside an embedding model ~40% of
its tokens/s on 2 cores (a thread slept at nearly every barrier of a graph).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile

import pytest

PROBE = """
import json, os, time
from botframework import LocalLLM
leaked = os.environ.get("GOMP_SPINCOUNT") or os.environ.get("OMP_WAIT_POLICY")
with LocalLLM("smollm2-135m-instruct", n_ctx=512, num_slots=1, n_threads=2, n_threads_batch=2) as llm:
    idle = []
    for _ in range(3):
        llm.complete("Once upon a time", max_tokens=16, temperature=0)
        c0 = time.process_time()
        time.sleep(0.3)
        idle.append(time.process_time() - c0)
print(json.dumps({"leaked": leaked, "idle_cpu_ms": min(idle) * 1e3}))
"""


def _probe(spincount: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    # not from the checkout: `-c` puts the cwd first on sys.path, shadowing the installed package
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_idle_compute_threads_sleep_and_the_setting_stays_in_the_process() -> None:
    ours = _probe(None)
    assert ours["leaked"] is None  # a llama-server started from this process gets libgomp's default
    spinning = _probe("300000")  # libgomp's own default, set explicitly: it is honoured
    assert spinning["leaked"] == "300000"
    # 300 ms idle after a request: ~0.1 ms of CPU. (What libgomp's own default costs varies by
    # machine: ~10 ms where it spins in full, ~0.1 ms on an AMX Xeon VM where it did not; that
    # the setting is honoured, test_libgomp_is_loaded_with... reads from libgomp itself.)
    assert float(ours["idle_cpu_ms"]) < 3.0, ours  # type: ignore[arg-type]


DISPLAY = """
import ctypes
from botframework.native import _lib
_lib.lib()
ctypes.CDLL("libgomp.so.1").omp_display_env(1)  # libgomp's settings (verbose: GOMP_* too), to stderr
"""


def _libgomp_settings(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", DISPLAY], env={**base, **env}, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    settings = {}
    for line in proc.stderr.splitlines():
        name, sep, value = line.strip().partition(" = ")
        if sep:
            settings[name] = value.strip("'")
    return settings


def test_libgomp_is_loaded_with_an_active_wait_policy_and_a_short_spin() -> None:
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("no libgomp here")
    ours = _libgomp_settings()
    assert (ours["OMP_WAIT_POLICY"], ours["GOMP_SPINCOUNT"]) == ("ACTIVE", "10000"), ours
    theirs = _libgomp_settings(OMP_WAIT_POLICY="passive", GOMP_SPINCOUNT="300000")  # the user's: honoured
    assert (theirs["OMP_WAIT_POLICY"], theirs["GOMP_SPINCOUNT"]) == ("PASSIVE", "300000"), theirs


def test_the_thread_that_loads_a_model_keeps_no_openmp_workers(model_path) -> None:  # type: ignore[no-untyped-def]
    """Loading a model can run an OpenMP parallel region on the loading thread (the weights'
    repack for AMX here), and libgomp then keeps workers for that thread, which never
    computes again: more threads than CPUs, so the engine thread's barriers spin throttled
    (1,000 spins) and sleep in the kernel once a step's waits outgrow that (SmolLM2 on 2
    threads: 9.5-10.5 ms a token from ~160 tokens of context on, 7-8 ms without). Model lets
    them go after its load. This thread first decodes once itself, so that it holds a pool
    whatever the CPU; after ModelWorker(...) letting this thread's pool go again must change
    nothing."""
    import time

    from botframework.native import Batch, Context, ContextParams, Model
    from botframework.native.omp import release_compute_threads
    from botframework.runtime.worker import ModelWorker, WorkerConfig

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: OpenMP starts no workers")

    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    def settle(expected: int) -> None:  # (libgomp's workers exit on their own time)
        deadline = time.monotonic() + 10
        while os_threads() != expected:
            assert time.monotonic() < deadline, (os_threads(), expected)
            time.sleep(0.01)

    if not release_compute_threads():
        pytest.skip("llama.cpp built without OpenMP")
    time.sleep(0.1)
    before = os_threads()
    with Model(model_path) as model, Context(model, ContextParams(n_ctx=256, n_threads=2, n_threads_batch=2)) as ctx:
        batch = Batch(8)
        batch.add_sequence(model.tokenize("Hello"), 0, 0, logits_last=True)
        ctx.decode(batch)
    settle(before + 1)  # this thread's pool: one worker beside it
    worker = ModelWorker(model_path, WorkerConfig(n_ctx=256, num_slots=1, n_threads=2, n_threads_batch=2))
    try:
        settle(before + 1)  # the engine thread (no pool: it has not computed), and no pool here
        assert release_compute_threads()
        time.sleep(0.2)
        assert os_threads() == before + 1, "the loading thread kept its OpenMP workers"
    finally:
        worker.close()
