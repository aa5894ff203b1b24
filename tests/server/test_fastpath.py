"""FastRoutes (server/fastpath.py) answers exactly as the full app does: for each request of a
corpus (good ones, bad JSON, bad fields, no or a wrong API key, an unknown model, a body over
the limit, another content type), the status and the body are the same whether the short
dispatch takes it or the full FastAPI stack does (CORS configured: FastRoutes steps aside)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fake_runtime import FakeRuntime, serve_fake

KEY = {"authorization": "Bearer k"}
JSON = {"content-type": "application/json"}
CORPUS: list[tuple[str, bytes, dict[str, str]]] = [
    ("a text", json.dumps({"model": "fake-model", "input": "hello"}).encode(), {**JSON, **KEY}),
    ("texts, base64", json.dumps({"model": "fake-model", "input": ["a", "b"], "encoding_format": "base64"}).encode(),
     {**JSON, **KEY}),
    ("token ids", json.dumps({"model": "fake-model", "input": [[1, 2], [3]]}).encode(), {**JSON, **KEY}),
    ("charset", json.dumps({"model": "fake-model", "input": "x"}).encode(),
     {"content-type": "application/json; charset=utf-8", **KEY}),
    ("no key", json.dumps({"model": "fake-model", "input": "hello"}).encode(), JSON),
    ("wrong key", json.dumps({"model": "fake-model", "input": "hello"}).encode(),
     {**JSON, "authorization": "Bearer nope"}),
    ("not JSON", b"{\"model\": ", {**JSON, **KEY}),
    ("empty body", b"", {**JSON, **KEY}),
    ("unknown field", json.dumps({"model": "fake-model", "input": "a", "temperature": 1}).encode(), {**JSON, **KEY}),
    ("bad id", json.dumps({"model": "fake-model", "input": [-1]}).encode(), {**JSON, **KEY}),
    ("empty input", json.dumps({"model": "fake-model", "input": []}).encode(), {**JSON, **KEY}),
    ("unknown model", json.dumps({"model": "nope", "input": "a"}).encode(), {**JSON, **KEY}),
    ("dimensions too big", json.dumps({"model": "fake-model", "input": "a", "dimensions": 99}).encode(),
     {**JSON, **KEY}),
    ("too large", json.dumps({"model": "fake-model", "input": "a" * 5000}).encode(), {**JSON, **KEY}),
    ("text/plain", json.dumps({"model": "fake-model", "input": "a"}).encode(),
     {"content-type": "text/plain", **KEY}),
]


def test_the_short_dispatch_answers_as_the_full_app(run: Callable[..., Any]) -> None:
    async def answers(**settings: Any) -> list[tuple[int, Any]]:
        out = []
        async with serve_fake(FakeRuntime(), api_keys=("k",), max_body_bytes=4096, **settings) as client:
            for _name, content, headers in CORPUS:
                response = await client.post("/v1/embeddings", content=content, headers=headers)
                try:
                    out.append((response.status_code, response.json()))
                except ValueError:
                    out.append((response.status_code, response.text))
        return out

    short = run(answers())
    full = run(answers(cors_origins=("http://example.test",)))
    for (name, _, _), a, b in zip(CORPUS, short, full, strict=True):
        assert a == b, name
    statuses = dict(zip([name for name, _, _ in CORPUS], [status for status, _ in short], strict=True))
    assert statuses["a text"] == statuses["token ids"] == statuses["charset"] == 200
    assert statuses["no key"] == statuses["wrong key"] == 401
    assert statuses["not JSON"] == statuses["unknown field"] == statuses["bad id"] == 400
    assert statuses["unknown model"] == 404 and statuses["too large"] == 413
