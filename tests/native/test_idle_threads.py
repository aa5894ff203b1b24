"""Idle compute threads sleep: after a request, the process burns (almost) no CPU.

ggml's CPU threads wait with OpenMP, which spins GOMP_SPINCOUNT times before it sleeps
(libgomp's default 300,000: ~5 ms a thread here, after every request, and through every gap
between two decodes that is shorter). botframework/native/_lib.py loads it with 3,000 unless
the user set the variable, and does not pass that on to child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

PROBE = """
import json, os, time
from botframework import LocalLLM
leaked = os.environ.get("GOMP_SPINCOUNT")
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
    # 300 ms idle after a request: ~0.1 ms of CPU, against ~10 ms with libgomp's default
    assert float(ours["idle_cpu_ms"]) < 3.0, ours  # type: ignore[arg-type]
    assert float(spinning["idle_cpu_ms"]) > 4 * float(ours["idle_cpu_ms"]), (ours, spinning)  # type: ignore[arg-type]
