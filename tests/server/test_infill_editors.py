"""/infill as llama.vscode and llama.vim call it (their request bodies replayed, as their source
builds them), on the fake runtime: every field accepted, n_predict / n_indent /
t_max_predict_ms / samplers doing what llama-server does, the fields llama.vscode reads present;
and the spec's top-level {"mode": "structured", "schema"} on chat requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.server.routes.infill import Cutoff

CHUNKS = [{"text": "def helper():\n    return 1\n", "time": 1733300000.5, "filename": "src/util.py"},
          {"text": "import os\n", "time": 1733300001, "filename": "main.py"}]
# llama.vscode's createRequestPayload(false, ...): a completion as the user types
VSCODE_COMPLETION = {"input_prefix": "def add(a, b):\n", "input_suffix": "\n\nprint(add(1, 2))\n",
                     "input_extra": CHUNKS, "prompt": "    ", "n_predict": 128, "top_k": 40, "top_p": 0.99,
                     "stream": False, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
                     "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}
# llama.vscode's createRequestPayload(true, ...): warm the cache with the ring buffer's chunks
VSCODE_WARMUP = {"input_prefix": "", "input_suffix": "", "input_extra": CHUNKS, "prompt": "", "n_predict": 0,
                 "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
# llama.vim's request (its samplers as a list, stream off, model blank)
VIM_COMPLETION = {"input_prefix": "x = ", "input_suffix": "\n", "input_extra": [], "prompt": "",
                  "n_predict": 16, "stop": [], "n_indent": 0, "top_k": 40, "top_p": 0.90, "stream": False,
                  "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "t_max_prompt_ms": 500,
                  "t_max_predict_ms": 500, "model": ""}


def test_llama_vscode_bodies_are_answered_with_the_fields_it_reads(run: Callable[..., Any]) -> None:
    async def go() -> None:
        runtime = FakeRuntime(reply="    return a + b\n\nprint('x')\n")
        async with serve_fake(runtime) as client:
            r = await client.post("/infill", json=VSCODE_COMPLETION)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["content"] == "    return a + b\n\n"  # n_indent 4: ends before "print" at column 0
            for key in ("content", "generation_settings", "tokens_cached", "truncated", "timings",
                        "tokens_predicted", "tokens_evaluated"):
                assert key in body, key
            assert set(body["timings"]) >= {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n",
                                             "predicted_ms", "predicted_per_second"}
            assert runtime.last_infill[2] == "src/util.py\ndef helper():\n    return 1\n\nmain.py\nimport os\n\n"
            sampler = runtime.requests[-1].params.sampler
            assert (sampler.top_k, sampler.top_p, sampler.min_p, sampler.temperature) == (40, 0.99, 0.0, 1.0)

            warm = await client.post("/infill", json=VSCODE_WARMUP)
            assert warm.status_code == 200, warm.text
            assert warm.json()["content"] == "" and warm.json()["tokens_predicted"] == 0
            assert runtime.requests[-1].params.max_tokens == 1  # prefilled (and cached), nothing returned

            vim = await client.post("/infill", json=VIM_COMPLETION)
            assert vim.status_code == 200, vim.text

            letters = await client.post("/infill", json={**VIM_COMPLETION, "samplers": "kpt", "temperature": 0.5})
            assert letters.status_code == 200
            assert runtime.requests[-1].params.sampler.temperature == 0.5

    run(go())


@pytest.mark.parametrize(("change", "param"), [
    ({"lora": [{"id": 0, "scale": 0.5}]}, "lora"),
    ({"samplers": ["top_k", "mirostat"]}, "samplers"),
    ({"max_tokens": 4}, "n_predict"),
    ({"n_predict": -2}, "n_predict"),
])
def test_what_infill_cannot_honour_is_a_400_naming_it(change: dict[str, Any], param: str,
                                                        run: Callable[..., Any]) -> None:
    async def go() -> None:
        async with serve_fake() as client:
            r = await client.post("/infill", json={**VSCODE_COMPLETION, **change})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == param

    run(go())


def test_a_stream_stops_at_the_cutoff_too(run: Callable[..., Any]) -> None:
    async def go() -> None:
        runtime = FakeRuntime(reply="    a\n    b\nc\n" + "d" * 40, token_delay_s=0.005)
        async with serve_fake(runtime) as client:
            r = await client.post("/infill", json={**VSCODE_COMPLETION, "stream": True})
            text = "".join(line for line in r.text.splitlines() if line.startswith("data:"))
            assert '"stop": true' in text.replace('"stop":true', '"stop": true')
            import json

            events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
            assert "".join(e["content"] for e in events) == "    a\n    b\n"
            assert runtime.cancelled  # the rest of the answer was not generated

    run(go())


def test_cutoff_rules() -> None:
    cut = Cutoff(n_indent=2)
    assert cut.feed("  x\n") == ("  x\n", False)
    assert cut.feed(" ") == (" ", False)      # a blank start: not known yet
    assert cut.feed(" y\nz") == (" y\n", True)  # "  y" is fine, "z" at column 0 is not
    late = Cutoff(max_predict_s=0.0)
    assert late.feed("abc") == ("abc", False)  # late, but no line has ended yet
    assert late.feed("\n") == ("\n", True)


def test_the_specs_top_level_structured_form(run: Callable[..., Any]) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    base = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}

    async def go() -> None:
        runtime = FakeRuntime(json_reply='{"a": 1}')
        async with serve_fake(runtime) as client:
            r = await client.post("/v1/chat/completions", json={**base, "mode": "structured", "schema": schema})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == '{"a": 1}'
            for bad, param in (({"mode": "structured"}, "schema"), ({"schema": schema}, "mode"),
                               ({"mode": "structured", "schema": schema,
                                 "response_format": {"type": "json_object"}}, "response_format")):
                r = await client.post("/v1/chat/completions", json={**base, **bad})
                assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text

    run(go())
