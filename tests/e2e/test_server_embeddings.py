"""/v1/embeddings on the real server with all-MiniLM-L6-v2, through the official openai package.

    python -m botframework.server --model all-minilm-l6-v2   (a child process, real sockets)
      openai.OpenAI().embeddings.create(...)   base64 by default in the package: decoded by it
      httpx for the float form and /tokenize
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from server_proc import pulled, served

openai = pytest.importorskip("openai")

MODEL = "all-minilm-l6-v2"
SENTENCES = ["The cat sat on the mat.", "A cat is sitting on a mat.", "Quarterly revenue grew by 8 percent.",
             "How do I bake bread?", "Bread recipes for beginners"]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    pulled(MODEL)
    with served(["--model", MODEL, "--log-level", "warning"]) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def floats(base_url: str, **body: Any) -> list[np.ndarray]:
    r = httpx.post(f"{base_url}/v1/embeddings", json={"model": MODEL, "encoding_format": "float", **body}, timeout=60)
    r.raise_for_status()
    return [np.asarray(d["embedding"], dtype=np.float32) for d in r.json()["data"]]


def test_openai_package_gets_our_vectors(client: Any, base_url: str) -> None:
    response = client.embeddings.create(model=MODEL, input=SENTENCES)  # the package asks for base64
    got = np.asarray([d.embedding for d in response.data], dtype=np.float32)
    assert got.shape == (len(SENTENCES), 384) and response.model == MODEL
    np.testing.assert_allclose(got, np.asarray(floats(base_url, input=SENTENCES)), atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2] and got[3] @ got[4] > got[3] @ got[0]  # meaningful
    assert response.usage.prompt_tokens == sum(
        len(httpx.post(f"{base_url}/tokenize", json={"content": s, "add_special": True}).json()["tokens"])
        for s in SENTENCES)


def test_dimensions_and_token_ids(client: Any, base_url: str) -> None:
    full = floats(base_url, input=SENTENCES[:2])
    short = client.embeddings.create(model=MODEL, input=SENTENCES[:2], dimensions=64)
    for f, s in zip(full, short.data, strict=True):
        head = f[:64] / np.linalg.norm(f[:64])
        np.testing.assert_allclose(np.asarray(s.embedding), head, atol=1e-6)
    ids = [httpx.post(f"{base_url}/tokenize", json={"content": s, "add_special": True}).json()["tokens"]
           for s in SENTENCES[:2]]
    by_ids = client.embeddings.create(model=MODEL, input=ids)
    for f, s in zip(full, by_ids.data, strict=True):
        np.testing.assert_allclose(np.asarray(s.embedding), f, atol=1e-5)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "word " * 600}, "input"),            # over BERT's 512 positions
    ({"input": [[101, 30522, 102]]}, "input"),       # out of the vocabulary
    ({"input": "x", "dimensions": 385}, "dimensions"),
])
def test_bad_requests(client: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, **body)
    assert info.value.body["param"] == param  # type: ignore[index]
