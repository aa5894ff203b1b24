"""Layers import downwards only: the plain layers work without the compiled module.

A fresh interpreter with `botframework.native._bf_ffi` blocked imports the scheduler, the
engine's plan types, the chat layer and the server app; the native wrappers themselves must
then fail with the package's error (which shows that the block works).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import botframework

# Run against whichever botframework this test run imports (the source tree or the install).
PACKAGE_ROOT = str(Path(botframework.__file__).resolve().parents[1])

PROBE = r"""
import importlib, json, sys
sys.path.insert(0, {root!r})

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "botframework.native._bf_ffi":
            raise ImportError("blocked by test_layers")
        return None

sys.meta_path.insert(0, Block())
out = {{}}
for name in {modules!r}:
    try:
        importlib.import_module(name)
        out[name] = "ok"
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""

PLAIN = ["botframework", "botframework.errors", "botframework.specs", "botframework.config",
         "botframework.engine.step", "botframework.engine", "botframework.scheduler",
         "botframework.scheduler.scheduler", "botframework.chat", "botframework.chat.plan",
         "botframework.server.app", "botframework.server.routes.chat", "botframework.native.jsontext",
         "botframework.api", "botframework.client", "botframework.session"]
NATIVE = ["botframework.native.model", "botframework.engine.engine", "botframework.runtime.worker"]


def probe(modules: list[str]) -> dict[str, str]:
    import json

    code = PROBE.format(root=PACKAGE_ROOT, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_plain_layers_import_without_the_compiled_module() -> None:
    results = probe(PLAIN + NATIVE)
    for name in PLAIN:
        assert results[name] == "ok", f"{name} needs the compiled module: {results[name]}"
    for name in NATIVE:  # the block is real: what needs the module says so, with our error
        assert results[name].startswith("BotframeworkError: botframework's native module is not built"), results[name]
