"""/v1/embeddings on the fake runtime: the four input forms, dimensions, base64, errors.

The fake's vectors are 8 long and depend on the input's tokens (a text counts as its fake
tokens), so order, truncation and "text == its token ids" can be checked without a model.
The real model over real sockets with the openai package is tests/e2e/test_server_embeddings.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.config import INLINE_EMBED_TOKENS

URL = "/v1/embeddings"


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", **extra}


def vectors(response: Any) -> list[np.ndarray]:
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return [np.asarray(d["embedding"], dtype=np.float32) for d in data]


def assert_error(response: Any, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_the_four_input_forms(run: Callable[..., object]) -> None:
    runtime = FakeRuntime()

    async def go() -> None:
        async with serve_fake(runtime) as c:
            one = await c.post(URL, json=body(input="hello"))
            assert one.status_code == 200 and runtime.embedded == ["hello"]
            assert one.json()["usage"] == {"prompt_tokens": 6, "total_tokens": 6}  # BOS + 5 characters
            texts = await c.post(URL, json=body(input=["hello", "world!"]))
            assert runtime.embedded == ["hello", "world!"]
            ids = runtime.tokenize("hello", add_special=True)
            as_ids = await c.post(URL, json=body(input=ids))
            assert runtime.embedded == [ids]  # one input given as token ids
            both_ids = [ids, runtime.tokenize("world!", add_special=True)]
            many_ids = await c.post(URL, json=body(input=both_ids))
            assert runtime.embedded == both_ids
            assert many_ids.json()["usage"]["prompt_tokens"] == sum(len(t) for t in both_ids)
            np.testing.assert_array_equal(vectors(one)[0], vectors(as_ids)[0])
            for a, b in zip(vectors(texts), vectors(many_ids), strict=True):
                np.testing.assert_array_equal(a, b)
            assert not np.array_equal(*vectors(texts))  # two inputs, two vectors, in order
    run(go())


@pytest.mark.parametrize("dimensions", [1, 3, 8])
def test_dimensions_truncates_then_renormalises(run: Callable[..., object], dimensions: int) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            full = vectors(await c.post(URL, json=body(input=["a", "bc"])))
            short = vectors(await c.post(URL, json=body(input=["a", "bc"], dimensions=dimensions)))
            for f, s in zip(full, short, strict=True):
                assert s.shape == (dimensions,)
                np.testing.assert_allclose(s, f[:dimensions] / np.linalg.norm(f[:dimensions]), rtol=1e-6)
                assert abs(float(np.linalg.norm(s)) - 1.0) < 1e-6
    run(go())


def test_base64_is_little_endian_float32(run: Callable[..., object]) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            floats = vectors(await c.post(URL, json=body(input="abc", dimensions=5)))[0]
            encoded = (await c.post(URL, json=body(input="abc", dimensions=5, encoding_format="base64"))).json()
            decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
            np.testing.assert_array_equal(decoded, floats)
    run(go())


@pytest.mark.parametrize(("request_body", "param"), [
    (body(input=""), "input"),
    (body(input=[]), "input"),
    (body(input=["a", ""]), "input"),
    (body(input=[[]]), "input"),
    (body(input=[[1, 2], []]), "input"),
    (body(input=[1, 2, 1000]), "input"),         # the fake's vocabulary is 0..999
    (body(input=[[1, 2], [5, 10**6]]), "input"),
    (body(input=[1, -2]), "input"),              # pydantic: ids are >= 0
    (body(input=["a", 3]), "input"),             # forms do not mix
    (body(input="x", dimensions=9), "dimensions"),  # the fake's vectors are 8 long
    (body(input="x", dimensions=0), "dimensions"),
    (body(input="x", encoding_format="int8"), "encoding_format"),
])
def test_bad_requests_are_400_naming_the_field(run: Callable[..., object], request_body: dict[str, Any],
                                               param: str) -> None:
    runtime = FakeRuntime()

    async def go() -> None:
        async with serve_fake(runtime) as c:
            assert_error(await c.post(URL, json=request_body), param)
    run(go())


def test_input_count_is_capped(run: Callable[..., object]) -> None:
    async def go() -> None:
        async with serve_fake(max_embedding_inputs=3) as c:
            assert (await c.post(URL, json=body(input=["a"] * 3))).status_code == 200
            assert_error(await c.post(URL, json=body(input=["a"] * 4)), "input")
            assert_error(await c.post(URL, json=body(input=[[5]] * 4)), "input")
    run(go())


def test_a_lone_input_may_be_computed_inline_only_while_no_other_request_holds_a_model(
        run: Callable[..., object]) -> None:
    """Computing on the event loop is allowed (inline_tokens > 0) only when this request is the
    one in flight: a chat answer being generated meanwhile keeps it on the engine thread."""
    runtime = FakeRuntime(token_delay_s=0.02)

    async def go() -> None:
        async with serve_fake(runtime) as c:
            assert (await c.post(URL, json=body(input="hello"))).status_code == 200
            assert runtime.inline_tokens == INLINE_EMBED_TOKENS
            chat = asyncio.create_task(c.post("/v1/chat/completions", json=body(
                messages=[{"role": "user", "content": "hi"}])))
            while not runtime.active:
                await asyncio.sleep(0.005)
            assert (await c.post("/api/embed", json=body(input="hello"))).status_code == 200  # Ollama's too
            assert runtime.inline_tokens == 0
            assert (await chat).status_code == 200
            assert (await c.post(URL, json=body(input=["hello", "world"]))).status_code == 200
            assert runtime.inline_tokens == INLINE_EMBED_TOKENS  # (the worker takes only a lone input)
    run(go())


def test_vectors_that_arrive_later_are_awaited_in_order(run: Callable[..., object]) -> None:
    """The engine thread's futures are not done when embed_submit returns: one awaited alone,
    several gathered, the same vectors in the same order as when they are done at once."""
    now, later = FakeRuntime(), FakeRuntime(embed_delay_s=0.02)

    async def go() -> None:
        async with serve_fake(now) as a, serve_fake(later) as b:
            for value in ("hello", ["hello", "world!", "third"]):
                first, second = await a.post(URL, json=body(input=value)), await b.post(URL, json=body(input=value))
                assert first.status_code == second.status_code == 200
                for x, y in zip(vectors(first), vectors(second), strict=True):
                    np.testing.assert_array_equal(x, y)
    run(go())
