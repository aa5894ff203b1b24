"""POST /v1/embeddings: pooled, L2-normalised vectors computed on the engine thread.

    input: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]  (ids checked against the vocabulary)
      ─► runtime.embed_submit(texts or token lists)   one job per input; a BERT model computes many per decode
      ─► dimensions: the first d components, re-normalised (a d above the model's size is a 400)
      ─► encoding_format: floats, or base64 of little-endian float32 (what the openai package asks for)
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends, Response
from fastapi import Request as HTTPRequest

from botframework.errors import InvalidRequestError
from botframework.server.auth import require_api_key
from botframework.server.generation import embed_vectors, get_runtime
from botframework.server.protocol import EmbeddingRequest
from botframework.server.validation import embedding_inputs

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, http: HTTPRequest) -> Response:
    runtime = await get_runtime(http, body.model)
    vectors, num_tokens = await embed_vectors(http, runtime, embedding_inputs(body, http.app.state.settings, runtime))
    if body.dimensions is not None:
        vectors = [_shortened(v, body.dimensions) for v in vectors]
    data = []
    for i, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            value = np.asarray(vector, dtype=np.float32).tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    result = {"object": "list", "data": data, "model": runtime.model_id,
              "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens}}
    # serialized here, in Rust: 256 float vectors of 384 are ~100k numbers, which FastAPI's
    # json.dumps takes ~50 ms for (pydantic_core ~10 ms) on the event loop
    return Response(pydantic_core.to_json(result), media_type="application/json")


def _shortened(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The first `dimensions` components at unit length: a shorter vector that still compares
    by cosine (OpenAI's `dimensions`). Truncating a model not trained for it loses more
    quality than text-embedding-3 does; the caller chose it."""
    if dimensions > len(vector):
        raise InvalidRequestError(
            f"'dimensions' is {dimensions}; the model's embeddings have {len(vector)}", param="dimensions")
    head = np.asarray(vector[:dimensions], dtype=np.float32)
    norm = float(np.linalg.norm(head))
    return head / norm if norm > 0 else head
