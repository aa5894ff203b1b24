"""Hostile chat templates (the `chat_template` option of [[models]] and LocalLLM): sandbox escapes
(`__class__`, `|attr`, `__globals__`, include/import of files) and resource bombs (`range(10**9)`,
huge strings, unbounded recursion, 10k-deep expressions).

Each template is loaded and rendered through botframework.native.shim.ChatTemplates (what
load_model uses) in a child process with a 4 GiB address-space limit and a timeout. It must be
refused (ModelLoadError / InvalidRequestError) or render without leaking anything from outside
the sandbox, and never crash or hang the process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TIMEOUT_S = 20  # a render that takes longer hangs the model's load
_CHILD = r"""
import json, sys
from botframework.native import Model
from botframework.native.shim import ChatTemplates
path, template = json.loads(sys.stdin.read())
model = Model(path)
try:
    templates = ChatTemplates(model, template)
    out = templates.apply({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True})
    result = {"outcome": "rendered", "prompt": out.get("prompt", "")[:2000]}
except Exception as exc:
    result = {"outcome": "refused", "type": type(exc).__name__, "message": str(exc)[:300]}
print("@@RESULT " + json.dumps(result), flush=True)
"""

ESCAPES = {
    "__class__": "{{ messages.__class__ }}",
    "__mro__ subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "|attr": "{{ messages|attr('__class__') }}",
    "|attr chain": "{{ (messages|attr('__class__')|attr('__base__')|attr('__subclasses__'))() }}",
    "cycler globals os": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "self globals": "{{ self.__init__.__globals__ }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "config": "{{ config.items() }}",
    "include file": "{% include '/etc/passwd' %}",
    "import module": "{% import 'os' as os %}{{ os.popen('id').read() }}",
    "extends file": "{% extends '/etc/passwd' %}",
    "raise_exception": "{{ raise_exception('refused by the template') }}",
    "unclosed block": "{% if messages %}x",
    "undefined filter": "{{ messages | no_such_filter }}",
}
BOMBS = {  # llama.cpp's Jinja has no ** operator: written out, these are what a bomb would be
    "range(10**9) loop": "{% for i in range(1000000000) %}x{% endfor %}",
    "empty range(10**9) loop": "{% for i in range(1000000000) %}{% endfor %}",
    "range(10**9) in an expression": "{{ range(1000000000) | length }}",
    "string 10**9": "{{ 'x' * 1000000000 }}",
    "string 10**12": "{{ 'x' * 1000000000000 }}",
    "string doubled 40 times": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"),
    "string doubled by join 34 times": ("{% set ns = namespace(s='x') %}{% for i in range(34) %}"
                                        "{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}{{ ns.s | length }}"),
    "joined range 10**8": "{{ range(100000000) | join(',') | length }}",
    "nested loops 10**4 x 10**4": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "10k-deep parentheses": "{{ " + "(" * 10_000 + "1" + ")" * 10_000 + " }}",
    "10k-deep ifs": "{% if true %}" * 10_000 + "x" + "{% endif %}" * 10_000,
    "10k elifs": "{% if false %}" + "{% elif false %}" * 10_000 + "{% endif %}",
    "10k-long + chain": "{{ " + " + ".join(["1"] * 10_000) + " }}",
    "macro fan-out 2**40": "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
}
# the deep ones are refused by botframework.native.jinja_guard before llama.cpp parses them, the
# recursive macro and the loops hit its render budget (they segfaulted or hung the load before),
# one expression that allocates gigabytes hits the memory budget of the module's operator new
# (bf_shim.cpp; before it the 4 GiB limit below was what stopped them, and the OOM killer in a server)
BOMB_REFUSALS = ("budget exceeded", "blocks nest", "tokens (at most")
LEAKS = ("uid=", "root:x:", "__builtins__", "<class", "<built-in", "popen")


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def render(model_path: Path, template: str) -> dict:  # type: ignore[type-arg]
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps([str(model_path), template]),
                              capture_output=True, text=True, timeout=TIMEOUT_S, preexec_fn=_limit,
                              cwd=tempfile.gettempdir())  # not the checkout: see gguf_loader.py
    except subprocess.TimeoutExpired:
        return {"outcome": "hung"}
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])  # type: ignore[no-any-return]
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()][-3:]
    return {"outcome": "crashed", "type": f"exit {proc.returncode}", "message": "\n".join(err)}


def _assert_contained(name: str, result: dict) -> None:  # type: ignore[type-arg]
    print(f"{name}: {result['outcome']} {result.get('type', '')} {str(result.get('message', result.get('prompt', '')))[:120]!r}")
    assert result["outcome"] in ("rendered", "refused"), result
    if result["outcome"] == "refused":
        assert result["type"] in ("ModelLoadError", "InvalidRequestError"), result
    else:
        leaked = [marker for marker in LEAKS if marker in result["prompt"]]
        assert not leaked, f"{name} leaked {leaked}: {result['prompt'][:300]}"


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_a_template_cannot_leave_the_sandbox(model_path: Path, name: str) -> None:
    _assert_contained(name, render(model_path, ESCAPES[name]))


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_template_bomb_hits_a_budget(model_path: Path, name: str) -> None:
    result = render(model_path, BOMBS[name])
    _assert_contained(name, result)
    assert result["outcome"] == "refused" and any(r in result["message"] for r in BOMB_REFUSALS), result
