"""Load GGUF files through our loader (botframework.native.Model) in a child process with a memory
limit (RLIMIT_AS) and a per-file timeout, and say how each load ended: loaded, refused (with the
exception's type and message), crashed (the signal or exit status, and stderr's tail) or hung.

One child loads many files in turn (importing the native module once); a crash or a hang ends
that child and the next file gets a fresh one.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MEMORY_LIMIT = 4 << 30  # address space: the real model loads in well under this

_CHILD = r"""
import json, sys
from botframework.native import Model
for line in sys.stdin:
    path = line.strip()
    try:
        m = Model(path)
        m.close()
        out = {"outcome": "loaded"}
    except Exception as exc:
        out = {"outcome": "refused", "type": type(exc).__name__, "message": str(exc)[:500]}
    sys.stdout.write("@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
"""


@dataclass
class Outcome:
    outcome: str  # loaded | refused | crashed | hung
    type: str = ""
    message: str = ""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Loader:
    def __init__(self, timeout_s: float = 60) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gguf-loader-{os.getpid()}.err"

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self._stderr = self.stderr_path.open("w")
            self.proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                         preexec_fn=_limit, env={**os.environ, "BOTFRAMEWORK_LOG_LEVEL": "error"},
                                         cwd=tempfile.gettempdir())  # `-c` puts the cwd first on sys.path:
                                         # from a checkout that is the source tree, without the compiled module
        return self.proc

    def load(self, path: Path) -> Outcome:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        deadline = time.monotonic() + self.timeout_s
        noise = []  # what else reaches stdout: ggml's abort handler prints a gdb backtrace there
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                proc.wait()
                return Outcome("hung", message=f"no answer in {self.timeout_s} s")
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("@@RESULT "):
                return Outcome(**json.loads(line[9:]))
            noise.append(line)
        code = proc.wait(timeout=30)
        time.sleep(0.05)
        tail = self.stderr_path.read_text(errors="replace")
        aborted = [ln for ln in tail.splitlines() if "GGML_ASSERT" in ln or "error" in ln.lower()]
        return Outcome("crashed", type=f"exit {code}", message=("\n".join(aborted[-3:]) or tail[-600:]))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr_path.unlink(missing_ok=True)
