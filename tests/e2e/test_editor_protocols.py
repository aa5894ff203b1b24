"""llama.vscode's /infill bodies and the spec's top-level structured form on the real model.
SmolLM2 has no fill-in-the-middle tokens, so /infill must refuse clearly (400, code
fim_not_supported) after accepting every field llama.vscode sends; the FIM behaviour itself
(n_indent, deadlines, samplers) is tested on the fake runtime (tests/server/test_infill_editors.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from server_proc import served

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from test_infill_editors import VSCODE_COMPLETION, VSCODE_WARMUP  # noqa: E402


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[str]:
    with served(["--model", str(model_path), "--ctx-size", "1024"]) as (url, _proc):
        yield url


@pytest.mark.parametrize("body", [VSCODE_COMPLETION, VSCODE_WARMUP])
def test_llama_vscode_bodies_get_a_clear_refusal_from_a_model_without_fim(server: str, body: dict) -> None:
    r = httpx.post(f"{server}/infill", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "fim_not_supported" and r.json()["error"]["param"] == "suffix"


def test_top_level_structured_output_on_the_real_model(server: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    r = httpx.post(f"{server}/v1/chat/completions", timeout=60, json={
        "model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "Describe Paris."}],
        "mode": "structured", "schema": schema, "max_tokens": 120, "temperature": 0})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), schema)


def test_capabilities_say_whether_the_model_does_fill_in_the_middle(server: str) -> None:
    model = httpx.get(f"{server}/v1/capabilities", timeout=10).json()["model"]
    assert model["fim"] is False  # SmolLM2 has no FIM tokens: editors fall back to plain completion
