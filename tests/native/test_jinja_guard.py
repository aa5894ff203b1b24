"""botframework.native.jinja_guard: the limits refuse what would crash llama.cpp's Jinja engine,
and the render budget changes nothing a real template renders (differential: every template
vendored with llama.cpp, raw vs guarded, same prompt, grammar, format and capabilities)."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from botframework.errors import InvalidRequestError, ModelLoadError
from botframework.native import Model, jinja_guard
from botframework.native._lib import ffi, lib
from botframework.native.shim import ChatTemplates

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "vendor/llama.cpp/models/templates").glob("*.jinja"))
_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "the weather", "parameters": {
    "type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"},
        "days": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "integer"}}}}}}}}]
_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
INPUTS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]},
    {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "", "tool_calls": [_CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}], "tools": _TOOLS},
    {"messages": [{"role": "user", "content": "hi"}], "tools": _TOOLS},
]


def _take(ptr: Any) -> dict[str, Any]:
    try:
        return json.loads(ffi.string(ptr).decode("utf-8"))  # type: ignore[no-any-return]
    finally:
        lib().bf_string_free(ptr)


def _renders(load: Any) -> list[Any]:
    """Capabilities, then per input the prompt/grammar/format or the error's first line (its
    source excerpt differs: the guard's tags move columns)."""
    try:
        apply, caps = load()
    except Exception:
        return ["load error"]
    out: list[Any] = [caps]
    for inputs in INPUTS:
        result = apply({**inputs, "add_generation_prompt": True})
        out.append(result.get("error", "").split("\n")[0] or [result.get(k) for k in ("prompt", "grammar", "format")])
    return out


def _raw(source: str) -> Any:
    def load() -> tuple[Any, Any]:
        handle = ffi.new("void **")
        err = lib().bf_chat_templates_new(ffi.NULL, source.encode("utf-8"), handle)
        if err != ffi.NULL:
            raise RuntimeError(_take(err))
        caps = _take(lib().bf_chat_templates_caps(handle[0])).get("caps")
        return (lambda inputs: _take(lib().bf_chat_apply(handle[0], json.dumps(inputs).encode("utf-8")))), caps
    return load


def _guarded(source: str) -> Any:
    def load() -> tuple[Any, Any]:
        templates = ChatTemplates(None, source)

        def apply(inputs: dict[str, Any]) -> dict[str, Any]:
            try:
                return templates.apply(inputs)
            except Exception as exc:
                return {"error": str(exc).removeprefix("chat template: ")}
        return apply, dict(templates.caps)
    return load


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_a_real_template_renders_the_same_under_the_guard(path: Path) -> None:
    source = path.read_text()
    jinja_guard.check(source)  # none of them comes near a limit
    assert _renders(_guarded(source)) == _renders(_raw(source))


@pytest.mark.parametrize("source", [
    "  {% if true %}x{% endif %}\n",  # lstrip_blocks before the first statement
    "\n\n{%- for m in messages -%}\n  [{{ m.content }}]\n{%- endfor %}\n",
    "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}",
    "{{ 'a' }}\n  {% for m in messages %}  {{ m.role }}{% else %}none{% endfor %}\n",
    "{% macro f(x) -%}\n  <{{ x }}>\n  {%- endmacro %}{% for m in messages %}{{ f(m.content) }}{% endfor %}",
    "{% macro f(x) %}\n  <{{ x }}>\n  {% endmacro %}\n{{ f(1) }}|{{ f(2) }}",
    "{% macro tree(n) %}{% if n > 0 %}({{ tree(n - 1) }}){% endif %}{% endmacro %}{{ tree(20) }}",
    "text {# a comment {% for %} #} {% set x = {'a': {'b': 1}} %}{{ x.a.b }}",
    "{% set block %}{% for m in messages %}{{ m.role }}{% endfor %}{% endset %}[{{ block }}]",
])
def test_whitespace_control_and_scoping_are_unchanged(source: str) -> None:
    assert _renders(_guarded(source)) == _renders(_raw(source))


@pytest.mark.parametrize(("source", "reason"), [
    ("{% if true %}" * 65 + "{% endif %}" * 65, "blocks nest"),
    ("{% if a %}{% elif b %}" + "{% elif b %}" * 70 + "{% endif %}", "blocks nest"),
    ("{{ " + "[" * 33 + "]" * 33 + " }}", "brackets deep"),
    ("{{ " + " + ".join(["1"] * 200) + " }}", "tokens"),
    ("{{ messages" + "|trim" * 200 + " }}", "tokens"),
])
def test_a_template_nesting_too_deep_is_refused_before_llama_cpp(source: str, reason: str) -> None:
    with pytest.raises(jinja_guard.TemplateRefused, match=reason):
        jinja_guard.check(source)
    with pytest.raises(ModelLoadError, match="chat template refused"):
        ChatTemplates(None, source)


@pytest.mark.parametrize(("source", "reason"), [
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested more than 32 deep"),
    ("{% macro f(n) %}{% if n < 30 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}", "loop iterations"),
    ("{% for i in range(3000) %}{% endfor %}", "loop iterations"),
])
def test_a_template_that_spends_its_budget_is_refused_at_load(source: str, reason: str) -> None:
    with pytest.raises(ModelLoadError, match=f"budget exceeded: .*{reason}"):
        ChatTemplates(None, source)


@pytest.mark.parametrize("source", [
    "{{ 'x' * 1000000000 }}",  # one expression: the loop-step budget never sees it
    "{{ range(1000000000) | length }}",
    "{% for i in range(1000000000) %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    # one std::string grown inside libstdc++ (why the module links it statically: CMakeLists.txt)
    "{% set ns = namespace(s='x') %}{% for i in range(34) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}{{ ns.s|length }}",
])
def test_a_template_that_allocates_gigabytes_hits_the_memory_budget_at_load(source: str) -> None:
    usage_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelLoadError, match="budget exceeded: the render needs more than 256 MiB"):
        ChatTemplates(None, source)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - usage_before) / 1024
    assert grown_mib < 600, f"peak RSS grew {grown_mib:.0f} MiB before the budget stopped the render"


def test_a_bomb_set_off_by_a_request_is_that_request_s_400_and_the_templates_keep_working() -> None:
    source = ("{% for m in messages %}{% if m.content == 'boom' %}{{ 'x' * 2000000000 }}{% endif %}"
              "{{ m.role }}: {{ m.content }}\n{% endfor %}")
    with ChatTemplates(None, source) as templates:
        for _ in range(3):
            with pytest.raises(InvalidRequestError, match="budget exceeded: the render needs more than 256 MiB"):
                templates.apply({"messages": [{"role": "user", "content": "boom"}]})
            fine = templates.apply({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True})
            assert fine["prompt"] == "user: hi\n"


def test_a_long_conversation_renders_within_the_memory_budget(model_path: Path) -> None:
    # 40 MB of messages (ten times the server's body limit; LocalLLM has none) through a real
    # template: held once or twice at a time (~50 MiB measured), far from 256 MiB + 32 x 40 MB
    with Model(model_path) as model, ChatTemplates(model) as templates:
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a" * 20_000_000},
                {"role": "assistant", "content": "b" * 10_000_000}, {"role": "user", "content": "c" * 10_000_000}]
        prompt = templates.apply({"messages": msgs, "add_generation_prompt": True})["prompt"]
        assert prompt.count("a") >= 20_000_000 and prompt.count("c") >= 10_000_000


def test_the_budget_grows_with_the_messages() -> None:
    with ChatTemplates(None, "{% for m in messages %}{% for i in range(50) %}.{% endfor %}{% endfor %}") as templates:
        many = [{"role": "user", "content": "x"}] * 100  # 5,100 steps: more than the base, within the allowance
        assert templates.apply({"messages": many, "add_generation_prompt": True})["prompt"] == "." * 5_000


def test_the_model_template_is_checked_and_instrumented_unless_it_comes_with_a_tool_use_one() -> None:
    own = {None: "{% for m in messages %}{{ m.content }}{% endfor %}"}
    assert jinja_guard.guarded_source(None, own.get) == jinja_guard.instrument(own[None])
    both = {**own, "tool_use": "{% for m in messages %}{{ m.role }}{% endfor %}"}
    assert jinja_guard.guarded_source(None, both.get) == ""  # llama.cpp picks between the two
    deep_tool_use = {**own, "tool_use": "{% if true %}" * 100 + "{% endif %}" * 100}
    with pytest.raises(jinja_guard.TemplateRefused):
        jinja_guard.guarded_source(None, deep_tool_use.get)
    assert jinja_guard.guarded_source(None, {}.get) == ""  # no template: llama.cpp's ChatML
    assert jinja_guard.guarded_source("chatml", None) == "chatml"
